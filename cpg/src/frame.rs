//! The byte adapter between CPG payloads and the DFSM's [`Message`]: what
//! the daemon calls on every delivery and for every multicast action.
//!
//! Decoding never fails: bytes the wire decoder refuses become
//! [`MessageBody::Malformed`] with the class the DFSM needs to react as the
//! C daemon does (see [`Malformed`]).

use crate::dfsm::{Epoch, Malformed, Message, MessageBody};
use crate::wire::{
    self, BASE_HEADER_BYTES, BaseHeader, MessageType, NORMAL_HEADER_BYTES, STATE_HEADER_BYTES,
    StateHeader,
};

fn epoch_of(epoch: wire::Epoch) -> Epoch {
    Epoch {
        epoch: epoch.epoch,
        time: epoch.time,
        node_id: epoch.node_id,
        pid: epoch.pid,
    }
}

fn wire_epoch(epoch: &Epoch) -> wire::Epoch {
    wire::Epoch {
        epoch: epoch.epoch,
        time: epoch.time,
        node_id: epoch.node_id,
        pid: epoch.pid,
    }
}

/// A received CPG payload as a DFSM message.
pub fn decode_message(bytes: &[u8]) -> Message {
    let Ok(base) = BaseHeader::decode(bytes) else {
        return Message {
            protocol_version: 0,
            time: 0,
            body: MessageBody::Malformed(Malformed::Runt),
        };
    };
    let (protocol_version, time, msg_type) = (base.protocol_version, base.time, base.message_type);
    let malformed = |kind| Message {
        protocol_version,
        time,
        body: MessageBody::Malformed(kind),
    };
    let needed = if msg_type == MessageType::Normal as u16 {
        NORMAL_HEADER_BYTES
    } else {
        STATE_HEADER_BYTES
    };
    if bytes.len() < needed {
        return malformed(Malformed::ShortHeader { msg_type });
    }
    let body = match wire::decode(bytes) {
        Ok(wire::Message::Normal { header, payload }) => MessageBody::Normal {
            subtype: base.subtype,
            count: header.count,
            payload: payload.to_vec(),
        },
        Ok(wire::Message::SyncStart { header }) => MessageBody::SyncStart {
            epoch: epoch_of(header.epoch),
        },
        Ok(wire::Message::State { header, blob }) => MessageBody::State {
            epoch: epoch_of(header.epoch),
            blob: blob.to_vec(),
        },
        Ok(wire::Message::Update { header, payload }) => MessageBody::Update {
            epoch: epoch_of(header.epoch),
            payload: payload.to_vec(),
        },
        Ok(wire::Message::UpdateComplete { header }) => MessageBody::UpdateComplete {
            epoch: epoch_of(header.epoch),
        },
        Ok(wire::Message::VerifyRequest { header, csum_id }) => MessageBody::VerifyRequest {
            epoch: epoch_of(header.epoch),
            csum_id,
        },
        Ok(wire::Message::Verify {
            header,
            csum_id,
            checksum,
        }) => MessageBody::Verify {
            epoch: epoch_of(header.epoch),
            csum_id,
            checksum,
        },
        Err(_) => match StateHeader::decode(bytes) {
            Ok(header) => MessageBody::Malformed(Malformed::BadState {
                msg_type,
                epoch: epoch_of(header.epoch),
            }),
            Err(_) => MessageBody::Malformed(Malformed::ShortHeader { msg_type }),
        },
    };
    debug_assert!(bytes.len() >= BASE_HEADER_BYTES);
    Message {
        protocol_version,
        time,
        body,
    }
}

/// The bytes to multicast for a message the DFSM asked to send. `None` for
/// [`MessageBody::Malformed`] (the DFSM never sends one).
pub fn encode_message(msg: &Message) -> Option<Vec<u8>> {
    let (pv, time) = (msg.protocol_version, msg.time);
    let mut out = Vec::new();
    let mut state = |kind, epoch: &Epoch, payload: &[u8]| {
        wire::encode_state(kind, pv, time, wire_epoch(epoch), payload, &mut out);
    };
    match &msg.body {
        MessageBody::Normal {
            subtype,
            count,
            payload,
        } => wire::encode_normal(*subtype, pv, time, *count, payload, &mut out),
        MessageBody::SyncStart { epoch } => state(MessageType::SyncStart, epoch, &[]),
        MessageBody::State { epoch, blob } => state(MessageType::State, epoch, blob),
        MessageBody::Update { epoch, payload } => state(MessageType::Update, epoch, payload),
        MessageBody::UpdateComplete { epoch } => state(MessageType::UpdateComplete, epoch, &[]),
        MessageBody::VerifyRequest { epoch, csum_id } => {
            wire::encode_verify_request(pv, time, wire_epoch(epoch), *csum_id, &mut out)
        }
        MessageBody::Verify {
            epoch,
            csum_id,
            checksum,
        } => wire::encode_verify(pv, time, wire_epoch(epoch), *csum_id, checksum, &mut out),
        MessageBody::Malformed(_) => return None,
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn epoch() -> Epoch {
        Epoch {
            epoch: 3,
            time: 1_795_319_737,
            node_id: 2,
            pid: 4242,
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let bodies = [
            MessageBody::Normal {
                subtype: 1,
                count: 77,
                payload: b"abc".to_vec(),
            },
            MessageBody::SyncStart { epoch: epoch() },
            MessageBody::State {
                epoch: epoch(),
                blob: vec![1; 40],
            },
            MessageBody::Update {
                epoch: epoch(),
                payload: vec![2; 9],
            },
            MessageBody::UpdateComplete { epoch: epoch() },
            MessageBody::VerifyRequest {
                epoch: epoch(),
                csum_id: 5,
            },
            MessageBody::Verify {
                epoch: epoch(),
                csum_id: 5,
                checksum: [7; 32],
            },
        ];
        for body in bodies {
            let msg = Message {
                protocol_version: 1,
                time: 1_795_319_738,
                body,
            };
            let bytes = encode_message(&msg).expect("encodable");
            assert_eq!(decode_message(&bytes), msg);
        }
    }

    #[test]
    fn malformed_classes() {
        assert_eq!(
            decode_message(&[0; 15]).body,
            MessageBody::Malformed(Malformed::Runt)
        );
        let mut normal = Vec::new();
        wire::encode_normal(1, 1, 0, 1, &[], &mut normal);
        assert_eq!(
            decode_message(&normal[..20]).body,
            MessageBody::Malformed(Malformed::ShortHeader { msg_type: 0 })
        );
        let mut verify = Vec::new();
        wire::encode_verify_request(1, 0, wire_epoch(&epoch()), 9, &mut verify);
        verify.push(0);
        assert_eq!(
            decode_message(&verify).body,
            MessageBody::Malformed(Malformed::BadState {
                msg_type: 5,
                epoch: epoch()
            })
        );
        let mut unknown = Vec::new();
        wire::encode_state(
            MessageType::Update,
            1,
            0,
            wire_epoch(&epoch()),
            &[],
            &mut unknown,
        );
        unknown[0] = 9;
        assert_eq!(
            decode_message(&unknown).body,
            MessageBody::Malformed(Malformed::BadState {
                msg_type: 9,
                epoch: epoch()
            })
        );
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let msg = decode_message(&bytes);
            if let Some(again) = encode_message(&msg) {
                // What decodes also re-encodes to a message that decodes the same.
                prop_assert_eq!(decode_message(&again), msg);
            }
        }
    }
}
