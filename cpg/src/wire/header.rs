//! DFSM message headers and messages (spec/dfsm.md §2, §3).

use bytemuck::{Pod, Zeroable};

use super::{WireError, read_pod};

/// Size of [`BaseHeader`].
pub const BASE_HEADER_BYTES: usize = 16;
/// Size of [`NormalHeader`]; the application payload starts here.
pub const NORMAL_HEADER_BYTES: usize = 24;
/// Size of [`StateHeader`]; the state payload starts here.
pub const STATE_HEADER_BYTES: usize = 32;
/// VERIFY_REQUEST payload: `csum_id` (u64).
pub const VERIFY_REQUEST_PAYLOAD_BYTES: usize = 8;
/// VERIFY payload: `csum_id` (u64) + SHA-256.
pub const VERIFY_PAYLOAD_BYTES: usize = 40;

wire_code! {
    /// DFSM message type, the base header's `type` (§3).
    pub enum MessageType: u16, unknown = WireError::UnknownMessageType {
        Normal = 0,
        SyncStart = 1,
        State = 2,
        Update = 3,
        UpdateComplete = 4,
        VerifyRequest = 5,
        Verify = 6,
    }
}

/// The 16-byte header every DFSM message starts with (§2.1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct BaseHeader {
    /// [`MessageType`] as sent (kept raw: a received value may be unknown).
    pub message_type: u16,
    /// Application message type for NORMAL, 0 for state messages.
    pub subtype: u16,
    /// 1 for DCDB, 0 for kvstore.
    pub protocol_version: u32,
    /// Sender's `time(NULL)` (u32 seconds).
    pub time: u32,
    /// Always 0 from C senders; not checked by C receivers.
    pub reserved: u32,
}
const _: () = assert!(size_of::<BaseHeader>() == BASE_HEADER_BYTES);
const _: () = assert!(core::mem::offset_of!(BaseHeader, time) == 8);

impl BaseHeader {
    /// Reads the base header of a CPG payload: the first thing the C
    /// receiver does (length < 16 → LEAVE), before the protocol-version
    /// check, which must come before the type-specific length checks.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        read_pod(bytes, 0).ok_or(WireError::ShortBaseHeader { len: bytes.len() })
    }
}

/// Header of NORMAL messages: base + per-sender message counter (§2.2).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct NormalHeader {
    pub base: BaseHeader,
    pub count: u64,
}
const _: () = assert!(size_of::<NormalHeader>() == NORMAL_HEADER_BYTES);
const _: () = assert!(core::mem::offset_of!(NormalHeader, count) == 16);

impl NormalHeader {
    /// A NORMAL header as the C sender builds it (reserved 0).
    pub fn new(subtype: u16, protocol_version: u32, time: u32, count: u64) -> Self {
        Self {
            base: BaseHeader {
                message_type: MessageType::Normal as u16,
                subtype,
                protocol_version,
                time,
                reserved: 0,
            },
            count,
        }
    }

    /// Reads the 24-byte header; does not check the type.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let base = BaseHeader::decode(bytes)?;
        read_pod(bytes, 0).ok_or(match base.message_type {
            0 => WireError::ShortNormalHeader { len: bytes.len() },
            message_type => WireError::ShortStateHeader {
                message_type,
                len: bytes.len(),
            },
        })
    }
}

/// The sync epoch (§2.3): compared as a whole (C `memcmp` of 16 bytes), so
/// only equality is meaningful.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Epoch {
    /// Counter local to the creating process.
    pub epoch: u32,
    /// Creator's `time(NULL)` at the confchg.
    pub time: u32,
    /// Creator node id.
    pub node_id: u32,
    /// Creator pid.
    pub pid: u32,
}
const _: () = assert!(size_of::<Epoch>() == 16);

/// Header of state messages (types 1..=6): base + epoch (§2.3).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct StateHeader {
    pub base: BaseHeader,
    pub epoch: Epoch,
}
const _: () = assert!(size_of::<StateHeader>() == STATE_HEADER_BYTES);
const _: () = assert!(core::mem::offset_of!(StateHeader, epoch) == 16);

impl StateHeader {
    /// A state header as the C sender builds it (subtype 0, reserved 0).
    pub fn new(message_type: MessageType, protocol_version: u32, time: u32, epoch: Epoch) -> Self {
        Self {
            base: BaseHeader {
                message_type: message_type as u16,
                subtype: 0,
                protocol_version,
                time,
                reserved: 0,
            },
            epoch,
        }
    }

    /// Reads the 32-byte header; does not check the type. Lets the DFSM
    /// apply the epoch check before the payload-length checks of
    /// VERIFY_REQUEST/VERIFY, as C does (§6.2, §6.6).
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let base = BaseHeader::decode(bytes)?;
        read_pod(bytes, 0).ok_or(WireError::ShortStateHeader {
            message_type: base.message_type,
            len: bytes.len(),
        })
    }
}

/// A decoded DFSM message, borrowing its payload from the CPG buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Type 0: application message (`header.base.subtype`: DCDB §9.1 or
    /// kvstore §10.1) with the payload after the 24-byte header.
    Normal {
        header: NormalHeader,
        payload: &'a [u8],
    },
    /// Type 1. Any payload is ignored, as by C.
    SyncStart { header: StateHeader },
    /// Type 2: the sender's state blob (DCDB: [`IndexView`](super::IndexView),
    /// kvstore: [`ClogState`](super::ClogState)).
    State { header: StateHeader, blob: &'a [u8] },
    /// Type 3: one update (DCDB: [`UpdateEntry`](super::UpdateEntry)).
    Update {
        header: StateHeader,
        payload: &'a [u8],
    },
    /// Type 4. Any payload is ignored, as by C.
    UpdateComplete { header: StateHeader },
    /// Type 5: payload exactly 8 bytes.
    VerifyRequest { header: StateHeader, csum_id: u64 },
    /// Type 6: payload exactly 40 bytes.
    Verify {
        header: StateHeader,
        csum_id: u64,
        checksum: [u8; 32],
    },
}

/// Decodes a CPG payload with the length rules of the C receiver
/// (spec/dfsm.md §6): < 16 bytes → [`WireError::ShortBaseHeader`]; type 0
/// and < 24 → [`WireError::ShortNormalHeader`]; any other type and < 32 →
/// [`WireError::ShortStateHeader`] (also for unknown types, as in C); then
/// unknown type → [`WireError::UnknownMessageType`].
///
/// Order matters for exact C behaviour: C checks the protocol version
/// between the 16-byte and the 24/32-byte checks, and the epoch before the
/// VERIFY_REQUEST/VERIFY payload lengths (which only a DCDB node in SYNCED
/// mode checks at all). A DFSM that must mirror that reads
/// [`BaseHeader::decode`] / [`StateHeader::decode`] first and then
/// interprets the error of this function.
pub fn decode(bytes: &[u8]) -> Result<Message<'_>, WireError> {
    let base = BaseHeader::decode(bytes)?;
    if base.message_type == MessageType::Normal as u16 {
        let header = NormalHeader::decode(bytes)?;
        let payload = bytes.get(NORMAL_HEADER_BYTES..).unwrap_or_default();
        return Ok(Message::Normal { header, payload });
    }
    let header = StateHeader::decode(bytes)?;
    let payload = bytes.get(STATE_HEADER_BYTES..).unwrap_or_default();
    Ok(match MessageType::try_from(base.message_type)? {
        MessageType::Normal => return Err(WireError::UnknownMessageType(base.message_type)),
        MessageType::SyncStart => Message::SyncStart { header },
        MessageType::State => Message::State {
            header,
            blob: payload,
        },
        MessageType::Update => Message::Update { header, payload },
        MessageType::UpdateComplete => Message::UpdateComplete { header },
        MessageType::VerifyRequest => {
            if payload.len() != VERIFY_REQUEST_PAYLOAD_BYTES {
                return Err(WireError::VerifyRequestLength { len: payload.len() });
            }
            let csum_id = read_pod(payload, 0)
                .ok_or(WireError::VerifyRequestLength { len: payload.len() })?;
            Message::VerifyRequest { header, csum_id }
        }
        MessageType::Verify => {
            let error = WireError::VerifyLength { len: payload.len() };
            if payload.len() != VERIFY_PAYLOAD_BYTES {
                return Err(error);
            }
            let csum_id = read_pod(payload, 0).ok_or(error)?;
            let checksum = read_pod(payload, 8).ok_or(error)?;
            Message::Verify {
                header,
                csum_id,
                checksum,
            }
        }
    })
}

impl Message<'_> {
    /// The base header of any message.
    pub fn base(&self) -> &BaseHeader {
        match self {
            Message::Normal { header, .. } => &header.base,
            Message::SyncStart { header }
            | Message::State { header, .. }
            | Message::Update { header, .. }
            | Message::UpdateComplete { header }
            | Message::VerifyRequest { header, .. }
            | Message::Verify { header, .. } => &header.base,
        }
    }

    /// The epoch of a state message, `None` for NORMAL.
    pub fn epoch(&self) -> Option<Epoch> {
        match self {
            Message::Normal { .. } => None,
            Message::SyncStart { header }
            | Message::State { header, .. }
            | Message::Update { header, .. }
            | Message::UpdateComplete { header }
            | Message::VerifyRequest { header, .. }
            | Message::Verify { header, .. } => Some(header.epoch),
        }
    }

    /// Appends the message's bytes: the headers exactly as decoded
    /// (including `reserved`), then the payload. A decoded message
    /// re-encodes to the received bytes, except that payload bytes after a
    /// SYNC_START or UPDATE_COMPLETE header (ignored by C) are dropped.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Message::Normal { header, payload } => {
                out.extend_from_slice(bytemuck::bytes_of(&header));
                out.extend_from_slice(payload);
            }
            Message::SyncStart { header } | Message::UpdateComplete { header } => {
                out.extend_from_slice(bytemuck::bytes_of(&header));
            }
            Message::State {
                header,
                blob: payload,
            }
            | Message::Update { header, payload } => {
                out.extend_from_slice(bytemuck::bytes_of(&header));
                out.extend_from_slice(payload);
            }
            Message::VerifyRequest { header, csum_id } => {
                out.extend_from_slice(bytemuck::bytes_of(&header));
                out.extend_from_slice(&csum_id.to_le_bytes());
            }
            Message::Verify {
                header,
                csum_id,
                checksum,
            } => {
                out.extend_from_slice(bytemuck::bytes_of(&header));
                out.extend_from_slice(&csum_id.to_le_bytes());
                out.extend_from_slice(&checksum);
            }
        }
    }
}

/// Appends a NORMAL message: 24-byte header then `payload`. To avoid a
/// copy, pass an empty payload and let a payload encoder append after it.
pub fn encode_normal(
    subtype: u16,
    protocol_version: u32,
    time: u32,
    count: u64,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let header = NormalHeader::new(subtype, protocol_version, time, count);
    out.extend_from_slice(bytemuck::bytes_of(&header));
    out.extend_from_slice(payload);
}

/// Appends a state message (`message_type` 1..=6): 32-byte header then
/// `payload`.
///
/// # Panics
/// If `message_type` is [`MessageType::Normal`] (a programming error).
pub fn encode_state(
    message_type: MessageType,
    protocol_version: u32,
    time: u32,
    epoch: Epoch,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    assert_ne!(
        message_type,
        MessageType::Normal,
        "NORMAL messages have a 24-byte header: use encode_normal"
    );
    let header = StateHeader::new(message_type, protocol_version, time, epoch);
    out.extend_from_slice(bytemuck::bytes_of(&header));
    out.extend_from_slice(payload);
}

/// Appends a VERIFY_REQUEST carrying `csum_id`.
pub fn encode_verify_request(
    protocol_version: u32,
    time: u32,
    epoch: Epoch,
    csum_id: u64,
    out: &mut Vec<u8>,
) {
    encode_state(
        MessageType::VerifyRequest,
        protocol_version,
        time,
        epoch,
        &csum_id.to_le_bytes(),
        out,
    );
}

/// Appends a VERIFY carrying `csum_id` and the database checksum.
pub fn encode_verify(
    protocol_version: u32,
    time: u32,
    epoch: Epoch,
    csum_id: u64,
    checksum: &[u8; 32],
    out: &mut Vec<u8>,
) {
    encode_state(MessageType::Verify, protocol_version, time, epoch, &[], out);
    out.extend_from_slice(&csum_id.to_le_bytes());
    out.extend_from_slice(checksum);
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: Epoch = Epoch {
        epoch: 2,
        time: 1_795_319_737,
        node_id: 1,
        pid: 20104,
    };

    fn samples() -> Vec<Vec<u8>> {
        let mut samples = Vec::new();
        let mut out = Vec::new();
        encode_normal(1, 1, 1_795_319_736, 10, b"payload", &mut out);
        samples.push(std::mem::take(&mut out));
        for message_type in [
            MessageType::SyncStart,
            MessageType::State,
            MessageType::Update,
            MessageType::UpdateComplete,
        ] {
            encode_state(message_type, 1, 7, EPOCH, b"", &mut out);
            samples.push(std::mem::take(&mut out));
        }
        encode_verify_request(1, 7, EPOCH, 42, &mut out);
        samples.push(std::mem::take(&mut out));
        encode_verify(1, 7, EPOCH, 42, &[0xab; 32], &mut out);
        samples.push(std::mem::take(&mut out));
        samples
    }

    #[test]
    fn samples_round_trip() {
        for sample in samples() {
            let message = decode(&sample).expect("sample decodes");
            let mut out = Vec::new();
            message.encode(&mut out);
            assert_eq!(out, sample);
            let expected = match message {
                Message::Normal { .. } => None,
                _ => Some(EPOCH),
            };
            assert_eq!(message.epoch(), expected, "{message:?}");
        }
    }

    /// Every cut into the fixed part (the header, and the exact payload of
    /// VERIFY_REQUEST/VERIFY) is an error; NORMAL/STATE/UPDATE payloads are
    /// opaque here, so cutting them is not (their decoders check them).
    #[test]
    fn every_truncation_is_an_error() {
        for sample in samples() {
            let message = decode(&sample).expect("sample decodes");
            let fixed = match message {
                Message::Normal { .. } => NORMAL_HEADER_BYTES,
                Message::VerifyRequest { .. } | Message::Verify { .. } => sample.len(),
                _ => STATE_HEADER_BYTES,
            };
            for len in 0..fixed {
                assert!(
                    decode(&sample[..len]).is_err(),
                    "len {len} of {sample:?} decoded"
                );
            }
            for len in fixed..sample.len() {
                assert!(decode(&sample[..len]).is_ok(), "len {len} of {sample:?}");
            }
        }
    }

    #[test]
    fn length_rules_give_distinct_errors() {
        assert_eq!(
            decode(&[0; 15]),
            Err(WireError::ShortBaseHeader { len: 15 })
        );
        assert_eq!(
            decode(&[0; 23]),
            Err(WireError::ShortNormalHeader { len: 23 })
        );
        let mut state = vec![0; 31];
        state[0] = 2;
        assert_eq!(
            decode(&state),
            Err(WireError::ShortStateHeader {
                message_type: 2,
                len: 31
            })
        );
        // Unknown types are "short state messages" first, as in C.
        let mut unknown = vec![0; 20];
        unknown[0] = 9;
        assert_eq!(
            decode(&unknown),
            Err(WireError::ShortStateHeader {
                message_type: 9,
                len: 20
            })
        );
        unknown.resize(32, 0);
        assert_eq!(decode(&unknown), Err(WireError::UnknownMessageType(9)));
    }

    #[test]
    fn verify_lengths_are_exact() {
        let mut out = Vec::new();
        encode_state(MessageType::VerifyRequest, 1, 0, EPOCH, &[0; 9], &mut out);
        assert_eq!(decode(&out), Err(WireError::VerifyRequestLength { len: 9 }));
        out.clear();
        encode_state(MessageType::Verify, 1, 0, EPOCH, &[0; 39], &mut out);
        assert_eq!(decode(&out), Err(WireError::VerifyLength { len: 39 }));
        // The header is still readable for the DFSM's epoch check.
        assert_eq!(
            StateHeader::decode(&out).map(|header| header.epoch),
            Ok(EPOCH)
        );
    }

    #[test]
    fn normal_header_layout() {
        let mut out = Vec::new();
        encode_normal(5, 1, 0x0102_0304, 0x1122_3344_5566_7788, b"", &mut out);
        assert_eq!(
            out,
            [
                0, 0, 5, 0, 1, 0, 0, 0, 4, 3, 2, 1, 0, 0, 0, 0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33,
                0x22, 0x11
            ]
        );
    }

    #[test]
    fn epochs_compare_as_a_whole() {
        let other_pid = Epoch { pid: 1, ..EPOCH };
        assert_ne!(EPOCH, other_pid);
        assert_eq!(EPOCH, Epoch { ..EPOCH });
    }
}
