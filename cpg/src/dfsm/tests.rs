//! Unit tests of the DFSM rules (spec/dfsm.md §4–§8) on a toy application.

use super::*;
use std::collections::BTreeMap;

const V: u32 = 1;

/// Toy application: the state is a byte string; the leader is the member
/// with the greatest state (ties: first); members with an equal state are
/// synced; the leader sends its state as one update; commit adopts it.
#[derive(Default)]
struct Toy {
    state: Vec<u8>,
    delivered: Vec<(MemberId, u16, Vec<u8>)>,
    result: i32,
    fail_deliver: bool,
    fail_commit: bool,
    csum: Option<[u8; 32]>,
    pending: Option<Vec<u8>>,
    synced_calls: u32,
    confchg_calls: u32,
    cleanups: u32,
    /// Writes of two bytes [key, value] set a key (for the own-write check).
    kv: BTreeMap<u8, u8>,
    /// `Ctx::now` at each delivery.
    now_seen: Vec<u32>,
}

impl Application for Toy {
    fn deliver(
        &mut self,
        ctx: &mut Ctx<'_>,
        sender: MemberId,
        subtype: u16,
        _time: u32,
        payload: &[u8],
    ) -> Result<i32, AppError> {
        self.now_seen.push(ctx.now());
        if self.fail_deliver {
            return Err(AppError::LEAVE);
        }
        self.delivered.push((sender, subtype, payload.to_vec()));
        if let [key, value] = payload {
            self.kv.insert(*key, *value);
        }
        Ok(self.result)
    }

    fn write_footprint(&mut self, _subtype: u16, payload: &[u8]) -> Option<Footprint> {
        let [key, _] = payload else {
            return None;
        };
        Some(vec![(vec![*key], self.kv.get(key).map(|v| u64::from(*v)))])
    }

    fn get_state(&mut self, _ctx: &mut Ctx<'_>) -> Result<Vec<u8>, AppError> {
        Ok(self.state.clone())
    }

    fn process_state_update(
        &mut self,
        ctx: &mut Ctx<'_>,
        states: &[(MemberId, &[u8])],
    ) -> Result<StateDecision, AppError> {
        let mut leader = 0;
        for (i, (_, s)) in states.iter().enumerate() {
            if *s > states[leader].1 {
                leader = i;
            }
        }
        let synced = states.iter().map(|(_, s)| *s == states[leader].1).collect();
        let updates = (states[leader].0 == ctx.local()).then(|| vec![self.state.clone()]);
        Ok(StateDecision { synced, updates })
    }

    fn process_update(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _sender: MemberId,
        payload: &[u8],
    ) -> Result<(), AppError> {
        self.pending = Some(payload.to_vec());
        Ok(())
    }

    fn commit(&mut self, _ctx: &mut Ctx<'_>) -> Result<(), AppError> {
        if self.fail_commit {
            return Err(AppError::LEAVE);
        }
        self.state = self.pending.take().ok_or(AppError::LEAVE)?;
        Ok(())
    }

    fn cleanup(&mut self) {
        self.cleanups += 1;
    }

    fn checksum(&mut self) -> Option<Result<[u8; 32], AppError>> {
        self.csum.map(Ok)
    }

    fn synced(&mut self, _ctx: &mut Ctx<'_>) {
        self.synced_calls += 1;
    }

    fn confchg(&mut self, _ctx: &mut Ctx<'_>, _members: &[MemberId]) {
        self.confchg_calls += 1;
    }
}

const A: MemberId = MemberId::new(1, 10);
const B: MemberId = MemberId::new(2, 20);
const C: MemberId = MemberId::new(3, 30);

fn dfsm(local: MemberId, state: &[u8]) -> Dfsm<Toy> {
    Dfsm::new(
        local,
        V,
        Toy {
            state: state.to_vec(),
            csum: Some([7; 32]),
            ..Toy::default()
        },
    )
}

fn actions(d: &mut Dfsm<Toy>) -> Vec<Action> {
    d.drain_actions().collect()
}

fn multicasts(acts: &[Action]) -> Vec<Message> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Multicast(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn results(acts: &[Action]) -> Vec<(u64, i32)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Result { count, result } => Some((*count, *result)),
            _ => None,
        })
        .collect()
}

fn normal(count: u64, payload: &[u8]) -> Message {
    Message {
        protocol_version: V,
        time: 5,
        body: MessageBody::Normal {
            subtype: 1,
            count,
            payload: payload.to_vec(),
        },
    }
}

fn state_msg(body: MessageBody) -> Message {
    Message {
        protocol_version: V,
        time: 5,
        body,
    }
}

/// Runs a whole CPG among `nodes`: delivers every multicast (in emission
/// order) to all of them until nothing is left.
fn pump(nodes: &mut [&mut Dfsm<Toy>]) {
    loop {
        let mut out = Vec::new();
        for d in nodes.iter_mut() {
            let me = d.local();
            for a in d.drain_actions() {
                if let Action::Multicast(m) = a {
                    out.push((me, m));
                }
            }
        }
        if out.is_empty() {
            return;
        }
        for (sender, m) in out {
            for d in nodes.iter_mut() {
                d.on_deliver(sender, m.clone(), 9);
            }
        }
    }
}

fn synced_pair() -> (Dfsm<Toy>, Dfsm<Toy>) {
    let mut a = dfsm(A, b"x");
    let mut b = dfsm(B, b"x");
    a.on_confchg(&[A, B], &[B], 1);
    b.on_confchg(&[A, B], &[B], 1);
    pump(&mut [&mut a, &mut b]);
    assert_eq!((a.mode(), b.mode()), (Mode::Synced, Mode::Synced));
    (a, b)
}

#[test]
fn mode_values_and_error_rule() {
    assert_eq!(Mode::Leave.value(), 253);
    assert_eq!(Mode::VersionError.value(), 254);
    assert!(Mode::Error.is_error() && !Mode::Update.is_error());

    let (mut a, _) = synced_pair();
    // A newer protocol → VERSION_ERROR, with one Leave action.
    a.on_deliver(
        B,
        Message {
            protocol_version: V + 1,
            ..normal(1, b"")
        },
        2,
    );
    let acts = actions(&mut a);
    assert_eq!(a.mode(), Mode::VersionError);
    assert_eq!(acts.iter().filter(|x| **x == Action::Leave).count(), 1);
    // ERROR (255) may replace VERSION_ERROR (254), LEAVE (253) may not.
    a.set_error_mode();
    assert_eq!(a.mode(), Mode::Error);
    assert!(!actions(&mut a).contains(&Action::Leave));
    assert_eq!(a.restart(3), Err(RestartError::NotRestartable(Mode::Error)));
    // Error modes ignore everything.
    a.on_confchg(&[A], &[], 4);
    assert_eq!(a.mode(), Mode::Error);
    a.set_mode(Mode::Leave);
    assert_eq!(a.mode(), Mode::Error, "no way down from ERROR");
    a.set_mode(Mode::VersionError);
    assert_eq!(a.mode(), Mode::Error);
}

/// A member that left (not from SYNCED after a failed multicast) applies
/// nothing more.
#[test]
fn a_member_that_left_applies_nothing() {
    let (mut a, _) = synced_pair();
    a.on_confchg(&[B], &[], 3);
    assert_eq!(a.mode(), Mode::Leave);
    assert!(!a.leaving_synced());
    a.on_deliver(B, normal(1, b"w"), 4);
    assert!(a.app().delivered.is_empty());
}

#[test]
fn older_protocol_is_ignored() {
    let (mut a, _) = synced_pair();
    a.on_deliver(
        B,
        Message {
            protocol_version: V - 1,
            ..normal(1, b"p")
        },
        2,
    );
    assert_eq!(a.mode(), Mode::Synced);
    assert!(a.app().delivered.is_empty());
}

#[test]
fn singleton_goes_synced_and_delivers_own_queued_messages() {
    let mut a = dfsm(A, b"x");
    a.on_confchg(&[A, B], &[B], 1);
    assert_eq!(a.mode(), Mode::StartSync);
    let count = a.send_normal(1, b"mine".to_vec(), 1).unwrap();
    actions(&mut a);
    a.on_deliver(A, normal(count, b"mine"), 2);
    a.on_deliver(B, normal(1, b"theirs"), 2);
    assert_eq!(a.queued().len(), 2);
    a.app_mut().result = 42;
    a.on_confchg(&[A], &[], 3);
    let acts = actions(&mut a);
    assert_eq!(a.mode(), Mode::Synced);
    assert_eq!(results(&acts), vec![(count, 42)]);
    assert_eq!(a.app().delivered, vec![(A, 1, b"mine".to_vec())]);
    assert!(a.queued().is_empty(), "messages of non-members are dropped");
    assert_eq!(a.app().confchg_calls, 2);
}

#[test]
fn queue_sorted_by_count_inserting_after_equal_counts() {
    let mut a = dfsm(A, b"x");
    a.on_confchg(&[A, B, C], &[B, C], 1);
    for (sender, count) in [(B, 5), (C, 3), (C, 5), (B, 1), (A, 5)] {
        a.on_deliver(sender, normal(count, b""), 2);
    }
    let order: Vec<(MemberId, u64)> = a.queued().iter().map(|q| (q.sender, q.count)).collect();
    assert_eq!(order, vec![(B, 1), (C, 3), (B, 5), (C, 5), (A, 5)]);
}

#[test]
fn normal_from_non_member_while_queueing_leaves() {
    let mut a = dfsm(A, b"x");
    a.on_confchg(&[A, B], &[B], 1);
    a.on_deliver(C, normal(1, b""), 2);
    assert_eq!(a.mode(), Mode::Leave);
}

#[test]
fn deliver_before_any_confchg_leaves() {
    let mut a = dfsm(A, b"x");
    a.on_deliver(B, normal(1, b""), 2);
    assert_eq!(a.mode(), Mode::Leave);
}

#[test]
fn local_result_and_lower_waiters_released() {
    let (mut a, _) = synced_pair();
    let c1 = a.send_normal(1, b"1".to_vec(), 2).unwrap();
    let c2 = a.send_normal(1, b"2".to_vec(), 2).unwrap();
    assert_eq!((c1, c2), (1, 2));
    actions(&mut a);
    a.app_mut().result = 7;
    // Count 1 never arrives; count 2 releases both (1 as not processed).
    a.on_deliver(A, normal(c2, b"2"), 3);
    assert_eq!(results(&actions(&mut a)), vec![(2, 7), (1, RESULT_ABORTED)]);
    assert_eq!(a.waiting().count(), 0);
}

#[test]
fn async_local_message_also_releases_lower_waiters() {
    let (mut a, _) = synced_pair();
    let c1 = a.send_normal(1, b"1".to_vec(), 2).unwrap();
    let c2 = a.send_normal_async(1, b"2".to_vec(), 2).unwrap();
    actions(&mut a);
    a.on_deliver(A, normal(c2, b"2"), 3);
    assert_eq!(results(&actions(&mut a)), vec![(c1, RESULT_ABORTED)]);
}

#[test]
fn failing_callback_gives_preset_result_and_leaves() {
    let (mut a, _) = synced_pair();
    let c = a.send_normal(1, b"1".to_vec(), 2).unwrap();
    actions(&mut a);
    a.app_mut().fail_deliver = true;
    a.on_deliver(A, normal(c, b"1"), 3);
    let acts = actions(&mut a);
    assert_eq!(results(&acts), vec![(c, RESULT_UNSET)]);
    assert_eq!(a.mode(), Mode::Leave);
    assert!(acts.contains(&Action::Leave));
}

#[test]
fn leave_keeps_waiters_until_restart() {
    let (mut a, _) = synced_pair();
    let c = a.send_normal(1, b"1".to_vec(), 2).unwrap();
    actions(&mut a);
    a.on_confchg(&[B], &[], 3); // we are no member any more
    assert_eq!(a.mode(), Mode::Leave);
    assert!(results(&actions(&mut a)).is_empty());
    assert_eq!(
        a.send_normal(1, vec![], 4),
        Err(SendError::ErrorMode(Mode::Leave))
    );
    a.on_deliver(B, normal(1, b""), 4); // ignored
    a.restart(10).unwrap();
    let acts = actions(&mut a);
    assert_eq!(results(&acts), vec![(c, RESULT_ABORTED)]);
    assert_eq!(a.mode(), Mode::Start);
    assert!(acts.contains(&Action::ModeChanged(Mode::Start)));
    // START ignores a confchg it is not part of, without the app callback.
    let calls = a.app().confchg_calls;
    a.on_confchg(&[B], &[], 11);
    assert_eq!((a.mode(), a.app().confchg_calls), (Mode::Start, calls));
}

#[test]
fn error_mode_fails_waiters_at_once() {
    let (mut a, _) = synced_pair();
    let c = a.send_normal(1, b"1".to_vec(), 2).unwrap();
    actions(&mut a);
    a.set_error_mode();
    assert_eq!(results(&actions(&mut a)), vec![(c, RESULT_ABORTED)]);
}

#[test]
fn state_exchange_update_and_queue_order() {
    let mut a = dfsm(A, b"zz");
    let mut b = dfsm(B, b"aa");
    a.on_confchg(&[A, B], &[B], 1);
    b.on_confchg(&[A, B], &[A], 1);
    // The lowest node id starts the exchange with its own epoch.
    let ss = multicasts(&actions(&mut a));
    assert!(
        matches!(ss[..], [Message { body: MessageBody::SyncStart { epoch }, .. }] if epoch.node_id == 1)
    );
    assert!(multicasts(&actions(&mut b)).is_empty());
    for d in [&mut a, &mut b] {
        d.on_deliver(A, ss[0].clone(), 2);
    }
    assert_eq!(a.sync_epoch(), b.sync_epoch());
    let sa = multicasts(&actions(&mut a));
    let sb = multicasts(&actions(&mut b));
    // B writes while its state exchange runs; both queue it.
    let cb = b.send_normal(1, b"b1".to_vec(), 2).unwrap();
    let nb = multicasts(&actions(&mut b));
    for d in [&mut a, &mut b] {
        d.on_deliver(B, nb[0].clone(), 3);
        d.on_deliver(A, sa[0].clone(), 3);
        d.on_deliver(B, sb[0].clone(), 3);
    }
    assert_eq!((a.mode(), b.mode()), (Mode::Synced, Mode::Update));
    let a_out = multicasts(&actions(&mut a));
    assert!(matches!(
        a_out[..],
        [
            Message {
                body: MessageBody::Update { .. },
                ..
            },
            Message {
                body: MessageBody::UpdateComplete { .. },
                ..
            }
        ]
    ));
    actions(&mut b);
    // A (synced) writes during B's update: B holds it in queue 2.
    let ca = a.send_normal(1, b"a1".to_vec(), 4).unwrap();
    let na = multicasts(&actions(&mut a));
    for d in [&mut a, &mut b] {
        d.on_deliver(A, a_out[0].clone(), 5);
        d.on_deliver(A, na[0].clone(), 5);
    }
    assert_eq!(b.sync_queued().len(), 1);
    assert_eq!(b.queued().len(), 1);
    // A applied its own write at once; B's is held until UPDATE_COMPLETE.
    assert_eq!(a.app().delivered, vec![(A, 1, b"a1".to_vec())]);
    for d in [&mut a, &mut b] {
        d.on_deliver(A, a_out[1].clone(), 6);
    }
    assert_eq!((a.mode(), b.mode()), (Mode::Synced, Mode::Synced));
    assert_eq!(b.app().state, b"zz");
    // After the commit: queue 2 (synced senders) first, then queue 1.
    assert_eq!(
        b.app().delivered,
        vec![(A, 1, b"a1".to_vec()), (B, 1, b"b1".to_vec())]
    );
    assert_eq!(
        a.app().delivered,
        vec![(A, 1, b"a1".to_vec()), (B, 1, b"b1".to_vec())]
    );
    assert_eq!(results(&actions(&mut b)), vec![(cb, 0)]);
    assert_eq!(results(&actions(&mut a)), vec![(ca, 0)]);
    assert!(b.app().cleanups >= 1);
}

#[test]
fn state_messages_of_another_epoch_are_dropped() {
    let mut a = dfsm(A, b"x");
    a.on_confchg(&[A, B], &[B], 1);
    actions(&mut a);
    let stale = Epoch {
        epoch: 99,
        time: 1,
        node_id: 1,
        pid: 10,
    };
    a.on_deliver(
        B,
        state_msg(MessageBody::State {
            epoch: stale,
            blob: b"y".to_vec(),
        }),
        2,
    );
    a.on_deliver(
        B,
        state_msg(MessageBody::UpdateComplete { epoch: stale }),
        2,
    );
    assert_eq!(a.mode(), Mode::StartSync);
}

#[test]
fn wrong_state_messages_per_mode_leave() {
    // UPDATE in START_SYNC.
    let mut a = dfsm(A, b"x");
    a.on_confchg(&[A, B], &[B], 1);
    let e = a.sync_epoch();
    a.on_deliver(
        B,
        state_msg(MessageBody::Update {
            epoch: e,
            payload: vec![],
        }),
        2,
    );
    assert_eq!(a.mode(), Mode::Leave);
    // Duplicate STATE.
    let mut a = dfsm(A, b"x");
    a.on_confchg(&[A, B, C], &[B], 1);
    let e = a.sync_epoch();
    a.on_deliver(
        B,
        state_msg(MessageBody::State {
            epoch: e,
            blob: b"s".to_vec(),
        }),
        2,
    );
    a.on_deliver(
        B,
        state_msg(MessageBody::State {
            epoch: e,
            blob: b"s".to_vec(),
        }),
        2,
    );
    assert_eq!(a.mode(), Mode::Leave);
    // Any state message in START.
    let mut a = dfsm(A, b"x");
    a.on_confchg(&[A, B], &[B], 1);
    a.on_confchg(&[B], &[], 1); // → LEAVE
    a.restart(2).unwrap();
    let e = a.sync_epoch();
    a.on_deliver(
        B,
        state_msg(MessageBody::VerifyRequest {
            epoch: e,
            csum_id: 1,
        }),
        3,
    );
    assert_eq!(a.mode(), Mode::Leave);
}

#[test]
fn sync_start_in_update_mode_leaves() {
    let mut a = dfsm(A, b"b");
    let mut b = dfsm(B, b"a");
    a.on_confchg(&[A, B], &[B], 1);
    b.on_confchg(&[A, B], &[A], 1);
    let ss = multicasts(&actions(&mut a));
    for d in [&mut a, &mut b] {
        d.on_deliver(A, ss[0].clone(), 2);
    }
    let sa = multicasts(&actions(&mut a));
    let sb = multicasts(&actions(&mut b));
    b.on_deliver(A, sa[0].clone(), 3);
    b.on_deliver(B, sb[0].clone(), 3);
    assert_eq!(b.mode(), Mode::Update);
    b.on_deliver(A, ss[0].clone(), 4);
    assert_eq!(b.mode(), Mode::Leave);
}

#[test]
fn resend_on_join_and_keep_queue_otherwise() {
    let mut a = dfsm(A, b"x");
    a.on_confchg(&[A, B, C], &[B, C], 1);
    actions(&mut a);
    let c = a.send_normal(1, b"mine".to_vec(), 1).unwrap();
    let sent = multicasts(&actions(&mut a));
    assert_eq!(sent.len(), 1);
    a.on_deliver(A, sent[0].clone(), 2);
    a.on_deliver(B, normal(4, b"theirs"), 2);
    // Only a leave: queue 1 is kept, nothing resent.
    a.on_confchg(&[A, B], &[], 3);
    assert!(
        multicasts(&actions(&mut a))
            .iter()
            .all(|m| m.msg_type() != msg_type::NORMAL)
    );
    assert_eq!(a.queued().len(), 2);
    // A join: own messages resent unchanged, whole queue dropped.
    a.on_confchg(&[A, B, C], &[C], 4);
    let out = multicasts(&actions(&mut a));
    assert_eq!(out[0], sent[0]);
    assert!(a.queued().is_empty());
    assert_eq!(a.waiting().collect::<Vec<_>>(), vec![c]);
    // A failed resend leaves.
    a.on_send_failed(&out[0], 5);
    assert_eq!(a.mode(), Mode::Leave);
}

#[test]
fn send_failures() {
    let (mut a, _) = synced_pair();
    let c = a.send_normal(1, b"1".to_vec(), 2).unwrap();
    let m = multicasts(&actions(&mut a));
    a.on_send_failed(&m[0], 3);
    assert_eq!(results(&actions(&mut a)), vec![(c, RESULT_ABORTED)]);
    assert_eq!(a.mode(), Mode::Synced);
    let e = a.sync_epoch();
    a.on_send_failed(
        &state_msg(MessageBody::Update {
            epoch: e,
            payload: vec![],
        }),
        3,
    );
    assert_eq!(a.mode(), Mode::Synced);
    a.on_send_failed(&state_msg(MessageBody::UpdateComplete { epoch: e }), 3);
    assert_eq!(a.mode(), Mode::Leave);
}

#[test]
fn verify_round() {
    let (mut a, mut b) = synced_pair();
    assert!(!b.request_verify(2), "only the lowest node id asks");
    assert!(a.request_verify(2));
    let req = multicasts(&actions(&mut a));
    assert!(matches!(
        req[..],
        [Message {
            body: MessageBody::VerifyRequest { csum_id: 1, .. },
            ..
        }]
    ));
    for d in [&mut a, &mut b] {
        d.on_deliver(A, req[0].clone(), 3);
    }
    assert!(
        multicasts(&actions(&mut b)).is_empty(),
        "only the requester publishes"
    );
    let ver = multicasts(&actions(&mut a));
    assert!(
        matches!(ver[..], [Message { body: MessageBody::Verify { csum_id: 1, checksum, .. }, .. }] if checksum == [7; 32])
    );
    for d in [&mut a, &mut b] {
        d.on_deliver(A, ver[0].clone(), 4);
    }
    assert_eq!((a.mode(), b.mode()), (Mode::Synced, Mode::Synced));

    // Second round: B's data differs → B leaves.
    assert!(a.request_verify(5));
    let req = multicasts(&actions(&mut a));
    b.app_mut().csum = Some([8; 32]);
    for d in [&mut a, &mut b] {
        d.on_deliver(A, req[0].clone(), 6);
    }
    let ver = multicasts(&actions(&mut a));
    assert!(a.request_verify(6), "the previous round completed locally");
    actions(&mut a);
    assert!(!a.request_verify(6), "round 3 still open");
    // ... until a confchg invalidates it.
    b.on_deliver(A, ver[0].clone(), 7);
    assert_eq!(b.mode(), Mode::Leave);
    a.on_confchg(&[A, B], &[], 8);
    a.on_confchg(&[A], &[], 8);
    assert!(a.request_verify(9));
}

#[test]
fn verify_while_not_synced_is_ignored_but_malformed_request_leaves_when_synced() {
    let mut a = dfsm(A, b"x");
    a.on_confchg(&[A, B], &[B], 1);
    let e = a.sync_epoch();
    a.on_deliver(
        B,
        state_msg(MessageBody::VerifyRequest {
            epoch: e,
            csum_id: 1,
        }),
        2,
    );
    a.on_deliver(
        B,
        state_msg(MessageBody::Verify {
            epoch: e,
            csum_id: 1,
            checksum: [0; 32],
        }),
        2,
    );
    assert_eq!(
        a.mode(),
        Mode::StartSync,
        "C would leave here (spec §6.2 quirk)"
    );
    let bad = MessageBody::Malformed(Malformed::BadState {
        msg_type: msg_type::VERIFY_REQUEST,
        epoch: e,
    });
    a.on_deliver(B, state_msg(bad), 2);
    assert_eq!(a.mode(), Mode::StartSync);
    let unknown = MessageBody::Malformed(Malformed::BadState {
        msg_type: 9,
        epoch: e,
    });
    a.on_deliver(B, state_msg(unknown), 2);
    assert_eq!(a.mode(), Mode::Leave);

    let (mut a, _) = synced_pair();
    let e = a.sync_epoch();
    let unknown = MessageBody::Malformed(Malformed::BadState {
        msg_type: 9,
        epoch: e,
    });
    a.on_deliver(B, state_msg(unknown), 2);
    assert_eq!(
        a.mode(),
        Mode::Synced,
        "unknown state types are ignored when synced"
    );
    let bad = MessageBody::Malformed(Malformed::BadState {
        msg_type: msg_type::VERIFY,
        epoch: e,
    });
    a.on_deliver(B, state_msg(bad), 2);
    assert_eq!(a.mode(), Mode::Leave, "with a checksum callback");
    let (mut a, _) = synced_pair();
    let bad = MessageBody::Malformed(Malformed::BadState {
        msg_type: msg_type::VERIFY_REQUEST,
        epoch: a.sync_epoch(),
    });
    a.on_deliver(B, state_msg(bad), 2);
    assert_eq!(
        a.mode(),
        Mode::Leave,
        "a malformed VERIFY_REQUEST when synced"
    );
}

#[test]
fn kvstore_like_app_ignores_bad_verify() {
    let (mut a, _) = synced_pair();
    a.app_mut().csum = None;
    let e = a.sync_epoch();
    let bad = MessageBody::Malformed(Malformed::BadState {
        msg_type: msg_type::VERIFY,
        epoch: e,
    });
    a.on_deliver(B, state_msg(bad), 2);
    assert_eq!(a.mode(), Mode::Synced);
}

#[test]
fn runt_and_short_messages_leave() {
    let (mut a, _) = synced_pair();
    // A runt has no usable protocol version; it leaves before that check.
    let runt = Message {
        protocol_version: V + 5,
        time: 0,
        body: MessageBody::Malformed(Malformed::Runt),
    };
    a.on_deliver(B, runt, 2);
    assert_eq!(a.mode(), Mode::Leave);
    let (mut a, _) = synced_pair();
    a.on_deliver(
        B,
        state_msg(MessageBody::Malformed(Malformed::ShortHeader {
            msg_type: 0,
        })),
        2,
    );
    assert_eq!(a.mode(), Mode::Leave);
}

#[test]
fn failed_commit_leaves_and_synced_callback_runs_on_entry() {
    let mut a = dfsm(A, b"b");
    let mut b = dfsm(B, b"a");
    b.app_mut().fail_commit = true;
    a.on_confchg(&[A, B], &[B], 1);
    b.on_confchg(&[A, B], &[A], 1);
    pump(&mut [&mut a, &mut b]);
    assert_eq!((a.mode(), b.mode()), (Mode::Synced, Mode::Leave));
    assert_eq!(a.app().synced_calls, 1);
    assert_eq!(b.app().synced_calls, 0);
}

// ----- write safety (Rust nodes only; nothing on the wire changes) ---------

fn votes3() -> Option<Votes> {
    Some(Votes::new([(1, 1), (2, 1), (3, 1)]))
}

fn safe(local: MemberId, state: &[u8]) -> Dfsm<Toy> {
    let mut d = dfsm(local, state);
    d.set_write_safety(votes3());
    d
}

#[test]
fn votes_count_distinct_configured_nodes() {
    let v = Votes::new([(1, 1), (2, 1), (3, 2), (3, 5)]);
    assert_eq!(v.total(), 4);
    assert!(!v.majority([1, 2]));
    assert!(!v.majority([1, 1, 1, 9]));
    assert!(v.majority([3, 1]));
    assert!(v.majority([1, 2, 3]));
}

#[test]
fn write_gate_waits_for_sync_and_majority() {
    // Without safety only an error mode closes it.
    let mut lone = dfsm(A, b"x");
    lone.on_confchg(&[A], &[A], 1);
    assert_eq!(lone.write_gate(), WriteGate::Open);
    lone.set_write_safety(votes3());
    assert_eq!(lone.write_gate(), WriteGate::NoMajority);

    let mut a = safe(A, b"x");
    let mut b = safe(B, b"x");
    assert_eq!(a.write_gate(), WriteGate::Syncing);
    a.on_confchg(&[A, B], &[B], 1);
    b.on_confchg(&[A, B], &[B], 1);
    assert_eq!(a.write_gate(), WriteGate::Syncing);
    pump(&mut [&mut a, &mut b]);
    assert_eq!(a.write_gate(), WriteGate::Open);
    assert_eq!(b.write_gate(), WriteGate::Open);
    a.set_error_mode();
    assert_eq!(a.write_gate(), WriteGate::Error);
}

/// Three write-safe members after their state exchange: A (the leader, the
/// greater state) SYNCED alone, B and C waiting for its updates in UPDATE.
fn synced_minority() -> (Dfsm<Toy>, Dfsm<Toy>, Dfsm<Toy>) {
    let mut a = safe(A, b"zz");
    let mut b = safe(B, b"aa");
    let mut c = safe(C, b"aa");
    for d in [&mut a, &mut b, &mut c] {
        d.on_confchg(&[A, B, C], &[B, C], 1);
    }
    let ss = multicasts(&actions(&mut a));
    for d in [&mut a, &mut b, &mut c] {
        d.on_deliver(A, ss[0].clone(), 2);
    }
    let states: Vec<(MemberId, Message)> = [(A, &mut a), (B, &mut b), (C, &mut c)]
        .into_iter()
        .map(|(id, d)| (id, multicasts(&actions(d))[0].clone()))
        .collect();
    for (id, m) in &states {
        for d in [&mut a, &mut b, &mut c] {
            d.on_deliver(*id, m.clone(), 3);
        }
    }
    (a, b, c)
}

/// A synced minority (A) while B and C are updated: A holds its own write
/// and B's (unsynced sender) and applies them after UPDATE_COMPLETE in the
/// order the updating members use; in C both would be applied at once.
#[test]
fn synced_minority_holds_writes_until_the_update_completes() {
    let (mut a, mut b, mut c) = synced_minority();
    assert_eq!(
        (a.mode(), b.mode(), c.mode()),
        (Mode::Synced, Mode::Update, Mode::Update)
    );
    assert_eq!(a.write_gate(), WriteGate::Syncing);
    let updates = multicasts(&actions(&mut a));
    actions(&mut b);
    actions(&mut c);
    let ca = a.send_normal(1, b"a1".to_vec(), 4).unwrap();
    let na = multicasts(&actions(&mut a));
    let cb = b.send_normal(1, b"b1".to_vec(), 4).unwrap();
    let nb = multicasts(&actions(&mut b));
    for d in [&mut a, &mut b, &mut c] {
        d.on_deliver(B, nb[0].clone(), 5);
        d.on_deliver(A, na[0].clone(), 5);
    }
    assert!(a.app().delivered.is_empty(), "applied by a minority");
    assert_eq!((a.sync_queued().len(), a.queued().len()), (1, 1));
    assert!(results(&actions(&mut a)).is_empty());
    for m in &updates {
        for d in [&mut a, &mut b, &mut c] {
            d.on_deliver(A, m.clone(), 6);
        }
    }
    let order = vec![(A, 1, b"a1".to_vec()), (B, 1, b"b1".to_vec())];
    for d in [&a, &b, &c] {
        assert_eq!(d.mode(), Mode::Synced);
        assert_eq!(d.app().delivered, order);
    }
    assert_eq!(results(&actions(&mut a)), vec![(ca, 0)]);
    assert_eq!(results(&actions(&mut b)), vec![(cb, 0)]);
}

/// The configuration changes before the update completes: the updating
/// members drop queue 2 (as in C), and so does the synced minority, whose
/// writer learns that its write was not applied.
#[test]
fn held_writes_are_dropped_everywhere_on_a_confchg() {
    let (mut a, mut b, mut c) = synced_minority();
    actions(&mut a);
    let ca = a.send_normal(1, b"a1".to_vec(), 4).unwrap();
    let na = multicasts(&actions(&mut a));
    for d in [&mut a, &mut b, &mut c] {
        d.on_deliver(A, na[0].clone(), 5);
    }
    assert_eq!(a.sync_queued().len(), 1);
    for d in [&mut a, &mut b] {
        d.on_confchg(&[A, B], &[], 6);
    }
    assert_eq!(results(&actions(&mut a)), vec![(ca, RESULT_ABORTED)]);
    assert!(a.app().delivered.is_empty());
    assert!(a.sync_queued().is_empty() && b.sync_queued().is_empty());
}

/// A write sent while the group had a majority, delivered after it lost it:
/// not applied, the writer gets EACCES, the member leaves to resync.
#[test]
fn write_delivered_without_a_majority_is_not_applied() {
    let mut a = safe(A, b"x");
    let mut b = safe(B, b"x");
    a.on_confchg(&[A, B], &[B], 1);
    b.on_confchg(&[A, B], &[B], 1);
    pump(&mut [&mut a, &mut b]);
    let ca = a.send_normal(1, b"a1".to_vec(), 2).unwrap();
    let na = multicasts(&actions(&mut a));
    a.on_confchg(&[A], &[], 3);
    actions(&mut a);
    a.on_deliver(A, na[0].clone(), 3);
    assert!(a.app().delivered.is_empty());
    assert_eq!(a.mode(), Mode::Leave);
    let acts = actions(&mut a);
    assert_eq!(results(&acts), vec![(ca, RESULT_ABORTED)]);
    // Without safety (C) it is applied.
    let (mut c, _d) = synced_pair();
    let cc = c.send_normal(1, b"c1".to_vec(), 2).unwrap();
    let nc = multicasts(&actions(&mut c));
    c.on_confchg(&[A], &[], 3);
    actions(&mut c);
    c.on_deliver(A, nc[0].clone(), 3);
    assert_eq!(c.app().delivered.len(), 1);
    assert_eq!(results(&actions(&mut c)), vec![(cc, 0)]);
}

/// The leader could not send an UPDATE: under write safety it ends the round
/// (no UPDATE_COMPLETE goes out, it leaves) instead of letting the others
/// count the incomplete members as synced.
#[test]
fn failed_update_send_ends_the_round_under_safety() {
    for safety in [false, true] {
        let mut a = dfsm(A, b"zz");
        let mut b = dfsm(B, b"aa");
        if safety {
            a.set_write_safety(votes3());
            b.set_write_safety(votes3());
        }
        a.on_confchg(&[A, B], &[B], 1);
        b.on_confchg(&[A, B], &[B], 1);
        let ss = multicasts(&actions(&mut a));
        for d in [&mut a, &mut b] {
            d.on_deliver(A, ss[0].clone(), 2);
        }
        let sa = multicasts(&actions(&mut a));
        let sb = multicasts(&actions(&mut b));
        for d in [&mut a, &mut b] {
            d.on_deliver(A, sa[0].clone(), 3);
            d.on_deliver(B, sb[0].clone(), 3);
        }
        // Execute A's actions one by one; the UPDATE fails.
        let mut sent = Vec::new();
        while let Some(action) = a.poll_action() {
            if let Action::Multicast(m) = action {
                if matches!(m.body, MessageBody::Update { .. }) {
                    a.on_send_failed(&m, 4);
                } else {
                    sent.push(m);
                }
            }
        }
        let complete_sent = sent
            .iter()
            .any(|m| matches!(m.body, MessageBody::UpdateComplete { .. }));
        assert_eq!(complete_sent, !safety);
        assert_eq!(a.mode() == Mode::Leave, safety);
        // Left from SYNCED: B counts A as synced until the confchg.
        assert_eq!(a.leaving_synced(), safety);
    }
}

/// Queue 1 (messages waiting for their sender's sync) is bounded: a member
/// that cannot catch up leaves and resyncs instead of growing.
#[test]
fn full_queues_make_the_member_leave() {
    let mut a = dfsm(A, b"x");
    a.set_queue_limits(8, usize::MAX);
    a.on_confchg(&[A, B], &[B], 1);
    actions(&mut a);
    assert_eq!(a.mode(), Mode::StartSync);
    for count in 1..=8 {
        a.on_deliver(B, normal(count, b"flood"), 2);
    }
    assert_eq!(a.queued().len(), 8);
    assert_eq!(a.mode(), Mode::StartSync);
    a.on_deliver(B, normal(9, b"flood"), 2);
    assert_eq!(a.mode(), Mode::Leave);
    assert!(actions(&mut a).contains(&Action::Leave));
    // The byte bound too, checked when the 64th message comes: each queued
    // message counts its payload and 64 bytes.
    let big = vec![7u8; 1000];
    for (bound, leaves) in [(63 * 1064, true), (63 * 1064 + 1, false)] {
        let mut b = dfsm(A, b"x");
        b.set_queue_limits(usize::MAX, bound);
        b.on_confchg(&[A, B], &[B], 1);
        for count in 1..=63 {
            b.on_deliver(B, normal(count, &big), 2);
        }
        assert_eq!(b.mode(), Mode::StartSync, "not checked before the 64th");
        b.on_deliver(B, normal(64, &big), 2);
        let left = b.mode() == Mode::Leave;
        assert_eq!(left, leaves, "bound {bound}");
    }
    // The default bounds take far more than that.
    let mut d = dfsm(A, b"x");
    d.on_confchg(&[A, B], &[B], 1);
    for count in 1..=200 {
        d.on_deliver(B, normal(count, &big), 2);
    }
    assert_eq!(d.mode(), Mode::StartSync);
}

#[test]
fn what_the_status_report_reads() {
    assert_eq!(MemberId::new(3, 1234).to_string(), "3/1234");
    let (mut a, b) = synced_pair();
    let members: Vec<(MemberId, bool)> = a.members().collect();
    assert_eq!(members, vec![(A, true), (B, true)]);
    assert_eq!((a.lowest_node_id(), b.lowest_node_id()), (1, 1));
    assert_eq!(a.msgcount(), 0);
    a.send_normal(1, b"w".to_vec(), 3).expect("send");
    assert_eq!(a.msgcount(), 1);
    let sent = multicasts(&actions(&mut a));
    a.on_deliver(A, sent[0].clone(), 42);
    assert_eq!(a.app().now_seen, vec![42], "callbacks see the input's time");
    // A failed write only fails its writer, also under write safety
    // (leaving_synced: see failed_update_send_ends_the_round_under_safety).
    a.set_write_safety(votes3());
    assert_eq!(a.write_safety(), votes3().as_ref());
    a.send_normal(1, b"w".to_vec(), 5).expect("send");
    let sent = multicasts(&actions(&mut a));
    a.on_send_failed(&sent[0], 5);
    assert_eq!((a.mode(), a.leaving_synced()), (Mode::Synced, false));
    assert_eq!(results(&actions(&mut a)), vec![(2, RESULT_ABORTED)]);
    // Shutdown fails every waiter.
    a.send_normal(1, b"w".to_vec(), 6).expect("send");
    actions(&mut a);
    a.shutdown();
    assert_eq!(results(&actions(&mut a)), vec![(3, RESULT_ABORTED)]);
}

/// Failed VERIFY round messages: a VERIFY_REQUEST is only logged; a VERIFY
/// makes the member leave (C) unless write safety is on (a synced member
/// leaving on its own would miss writes the others count it for: the
/// round is skipped).
#[test]
fn failed_verify_messages() {
    for safety in [false, true] {
        let (mut a, _) = synced_pair();
        if safety {
            a.set_write_safety(votes3());
        }
        let epoch = a.sync_epoch();
        let request = state_msg(MessageBody::VerifyRequest { epoch, csum_id: 1 });
        a.on_send_failed(&request, 3);
        assert_eq!(a.mode(), Mode::Synced, "safety {safety}: VERIFY_REQUEST");
        let verify = state_msg(MessageBody::Verify {
            epoch,
            csum_id: 1,
            checksum: [7; 32],
        });
        a.on_send_failed(&verify, 4);
        let left = a.mode() == Mode::Leave;
        assert_eq!(left, !safety, "safety {safety}: VERIFY");
    }
    // A malformed message is never sent; its failure changes nothing.
    let (mut a, _) = synced_pair();
    a.on_send_failed(&state_msg(MessageBody::Malformed(Malformed::Runt)), 3);
    assert_eq!(a.mode(), Mode::Synced);
}

/// An application without a checksum (the kvstore): VERIFY requests are
/// ignored, nothing is published.
#[test]
fn an_application_without_a_checksum_never_verifies() {
    struct Bare;
    impl Application for Bare {
        fn deliver(
            &mut self,
            _: &mut Ctx<'_>,
            _: MemberId,
            _: u16,
            _: u32,
            _: &[u8],
        ) -> Result<i32, AppError> {
            Ok(0)
        }
        fn get_state(&mut self, _: &mut Ctx<'_>) -> Result<Vec<u8>, AppError> {
            Ok(b"s".to_vec())
        }
        fn process_state_update(
            &mut self,
            _: &mut Ctx<'_>,
            states: &[(MemberId, &[u8])],
        ) -> Result<StateDecision, AppError> {
            Ok(StateDecision {
                synced: vec![true; states.len()],
                updates: None,
            })
        }
        fn process_update(
            &mut self,
            _: &mut Ctx<'_>,
            _: MemberId,
            _: &[u8],
        ) -> Result<(), AppError> {
            Ok(())
        }
        fn commit(&mut self, _: &mut Ctx<'_>) -> Result<(), AppError> {
            Ok(())
        }
    }
    let mut a = Dfsm::new(A, V, Bare);
    a.on_confchg(&[A], &[A], 1);
    assert_eq!(a.mode(), Mode::Synced);
    assert!(a.request_verify(2));
    let req = multicasts(&a.drain_actions().collect::<Vec<_>>());
    a.on_deliver(A, req[0].clone(), 3);
    let out = multicasts(&a.drain_actions().collect::<Vec<_>>());
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(a.mode(), Mode::Synced);
}

/// Three write-safe members, synced.
fn synced_three() -> (Dfsm<Toy>, Dfsm<Toy>, Dfsm<Toy>) {
    let mut a = safe(A, b"x");
    let mut b = safe(B, b"x");
    let mut c = safe(C, b"x");
    for d in [&mut a, &mut b, &mut c] {
        d.on_confchg(&[A, B, C], &[A, B, C], 1);
    }
    pump(&mut [&mut a, &mut b, &mut c]);
    assert_eq!(c.write_gate(), WriteGate::Open);
    (a, b, c)
}

/// C writes; only C itself gets its message (corosync hands a node its own
/// multicast before the others received it), then C is cut off.
fn own_write_then_cut(a: &mut Dfsm<Toy>, b: &mut Dfsm<Toy>, c: &mut Dfsm<Toy>) {
    let count = c.send_normal(1, vec![1, 9], 10).expect("send");
    let sent = multicasts(&actions(c));
    c.on_deliver(C, sent[0].clone(), 10);
    assert_eq!(results(&actions(c)), vec![(count, 0)], "acknowledged");
    c.on_confchg(&[C], &[], 11);
    a.on_confchg(&[A, B], &[], 11);
    b.on_confchg(&[A, B], &[], 11);
    pump(&mut [a, b]);
    pump(&mut [c]);
}

/// The payloads of the NORMAL messages among `sent`.
fn normal_payloads(sent: &[Message]) -> Vec<Vec<u8>> {
    sent.iter()
        .filter_map(|m| match &m.body {
            MessageBody::Normal { payload, .. } => Some(payload.clone()),
            _ => None,
        })
        .collect()
}

fn heal(a: &mut Dfsm<Toy>, b: &mut Dfsm<Toy>, c: &mut Dfsm<Toy>) -> Vec<Message> {
    heal_failing(a, b, c, false)
}

/// [`heal`]; with `fail_own`, C's NORMAL messages fail to send instead of
/// being delivered. Returns C's NORMAL messages.
fn heal_failing(
    a: &mut Dfsm<Toy>,
    b: &mut Dfsm<Toy>,
    c: &mut Dfsm<Toy>,
    fail_own: bool,
) -> Vec<Message> {
    // The heal's resync brings the majority's state to C (the toy's kv
    // is not part of its state: the test sets C's as the resync would).
    c.on_confchg(&[A, B, C], &[A, B], 12);
    a.on_confchg(&[A, B, C], &[C], 12);
    b.on_confchg(&[A, B, C], &[C], 12);
    let mut sent = Vec::new();
    loop {
        let mut out = Vec::new();
        let mut failed = Vec::new();
        for d in [&mut *a, &mut *b, &mut *c] {
            let me = d.local();
            for action in d.drain_actions() {
                if let Action::Multicast(m) = action {
                    if me == C && matches!(m.body, MessageBody::Normal { .. }) {
                        sent.push(m.clone());
                        if fail_own {
                            failed.push(m);
                            continue;
                        }
                    }
                    out.push((me, m));
                }
            }
        }
        for m in &failed {
            c.on_send_failed(m, 13);
        }
        if out.is_empty() && failed.is_empty() {
            return sent;
        }
        for (sender, m) in out {
            for d in [&mut *a, &mut *b, &mut *c] {
                d.on_deliver(sender, m.clone(), 13);
            }
        }
    }
}

#[test]
fn an_own_write_the_majority_lacks_is_sent_again_after_the_heal() {
    let (mut a, mut b, mut c) = synced_three();
    own_write_then_cut(&mut a, &mut b, &mut c);
    assert_eq!(c.core.own_unconfirmed.len(), 1, "unconfirmed at the cut");
    // Alone, C syncs with itself: no majority, nothing is decided yet.
    assert_eq!(c.mode(), Mode::Synced);
    assert_eq!(c.core.own_unconfirmed.len(), 1, "kept while in a minority");
    // The resync erased it on C (the majority never had it).
    c.app_mut().kv.clear();
    let mut seen = 0;
    let _ = c.take_kept_if_changed(&mut seen);
    let (log, sent) =
        pmxcfs_testkit::logged_at(tracing::Level::INFO, || heal(&mut a, &mut b, &mut c));
    assert_eq!(normal_payloads(&sent), vec![vec![1, 9]], "sent again once");
    assert!(c.core.own_unconfirmed.is_empty());
    assert!(
        log.contains("lacked=1") && log.contains("superseded=0"),
        "{log}"
    );
    assert!(
        c.take_kept_if_changed(&mut seen).is_some(),
        "the check changed the kept list"
    );
    for d in [&a, &b, &c] {
        assert_eq!(d.app().kv.get(&1), Some(&9), "{} holds it", d.local());
    }
}

/// The majority changed the key of a cut-off own write since: the write is
/// superseded (as if it had come first), not sent again.
#[test]
fn an_own_write_whose_key_the_majority_changed_is_superseded() {
    let (mut a, mut b, mut c) = synced_three();
    own_write_then_cut(&mut a, &mut b, &mut c);
    // The resync brings the majority's value of the key.
    c.app_mut().kv.clear();
    c.app_mut().kv.insert(1, 7);
    let (log, sent) =
        pmxcfs_testkit::logged_at(tracing::Level::INFO, || heal(&mut a, &mut b, &mut c));
    assert!(sent.is_empty(), "{sent:?}");
    assert!(
        log.contains("lacked=0") && log.contains("superseded=1"),
        "{log}"
    );
    assert!(c.core.own_unconfirmed.is_empty() && c.core.own_resent.is_empty());
}

#[test]
fn an_own_write_the_majority_holds_is_not_sent_again() {
    let (mut a, mut b, mut c) = synced_three();
    own_write_then_cut(&mut a, &mut b, &mut c);
    // The majority had got it after all (the resync kept it).
    let mut seen = 0;
    assert_eq!(
        c.take_kept_if_changed(&mut seen).map(|kept| kept.len()),
        Some(1)
    );
    let (log, sent) =
        pmxcfs_testkit::logged_at(tracing::Level::INFO, || heal(&mut a, &mut b, &mut c));
    assert_eq!(
        c.take_kept_if_changed(&mut seen).map(|kept| kept.len()),
        Some(0),
        "held: nothing to keep on disk any more"
    );
    assert!(sent.is_empty(), "{sent:?}");
    assert!(c.core.own_unconfirmed.is_empty());
    assert!(log.contains("all held by the majority"), "{log}");
    // Held: recent again, with its payload counted.
    assert_eq!(c.core.own_recent.len(), 1);
    assert_eq!(c.core.own_recent_bytes, c.core.own_recent[0].payload.len());
}

#[test]
fn a_change_that_keeps_a_majority_confirms_own_writes() {
    let (mut a, mut b, mut c) = synced_three();
    let count = c.send_normal(1, vec![1, 9], 10).expect("send");
    let sent = multicasts(&actions(&mut c));
    for d in [&mut a, &mut b, &mut c] {
        d.on_deliver(C, sent[0].clone(), 10);
    }
    assert_eq!(results(&actions(&mut c)), vec![(count, 0)]);
    assert_eq!(c.core.own_recent.len(), 1, "kept until confirmed");
    // A leaves; B moved with C: virtual synchrony says B has it.
    c.on_confchg(&[B, C], &[], 11);
    assert!(c.core.own_recent.is_empty() && c.core.own_unconfirmed.is_empty());
    // A restart (the connection was lost) proves nothing.
    let (_, _, mut c) = synced_three();
    c.send_normal(1, vec![2, 9], 12).expect("send");
    let sent = multicasts(&actions(&mut c));
    c.on_deliver(C, sent[0].clone(), 12);
    c.restart(13).expect("restart");
    c.on_confchg(&[A, B, C], &[C], 14);
    assert_eq!(c.core.own_unconfirmed.len(), 1, "checked after the rejoin");
    // Without write safety nothing is kept (C's rules).
    let mut lone = dfsm(A, b"x");
    lone.on_confchg(&[A], &[A], 1);
    lone.send_normal(1, vec![3, 1], 2).expect("send");
    let sent = multicasts(&actions(&mut lone));
    lone.on_deliver(A, sent[0].clone(), 2);
    assert!(lone.core.own_recent.is_empty());
}

fn own(key: u8, before: Option<u64>, after: Option<u64>) -> OwnWrite {
    OwnWrite {
        time: 0,
        subtype: 1,
        payload: vec![key],
        before: vec![(vec![key], before)],
        after: vec![(vec![key], after)],
    }
}

/// PVE's config write: create `t`, write it, rename it over `c`.
fn atomic_write() -> Vec<OwnWrite> {
    vec![
        own(b't', None, Some(0)),
        own(b't', Some(0), Some(5)),
        OwnWrite {
            time: 0,
            subtype: 1,
            payload: vec![b'r'],
            before: vec![(vec![b't'], Some(5)), (vec![b'c'], Some(1))],
            after: vec![(vec![b't'], None), (vec![b'c'], Some(5))],
        },
    ]
}

fn tree(states: &[(u8, Option<u64>)]) -> std::collections::HashMap<Vec<u8>, Option<u64>> {
    states.iter().map(|(k, s)| (vec![*k], *s)).collect()
}

#[test]
fn the_majority_holds_a_prefix_of_own_writes() {
    let w = atomic_write();
    // All three arrived: the tmp file is gone again (not "as before the
    // create": the whole chain counts, not each write alone).
    assert_eq!(
        held_prefix(&w, &tree(&[(b't', None), (b'c', Some(5))])),
        Some(3)
    );
    // The rename did not.
    assert_eq!(
        held_prefix(&w, &tree(&[(b't', Some(5)), (b'c', Some(1))])),
        Some(2)
    );
    // Only the create did.
    assert_eq!(
        held_prefix(&w, &tree(&[(b't', Some(0)), (b'c', Some(1))])),
        Some(1)
    );
    // None did.
    assert_eq!(
        held_prefix(&w, &tree(&[(b't', None), (b'c', Some(1))])),
        Some(0)
    );
    // The majority rewrote the config since: superseded.
    assert_eq!(
        held_prefix(&w, &tree(&[(b't', None), (b'c', Some(7))])),
        None
    );
    // An older write of another path the majority changed since (a lock it
    // took after ours was released) does not hide the lost ones.
    let mut w2 = vec![own(b'l', None, Some(0)), own(b'l', Some(0), None)];
    w2.extend(atomic_write());
    let t = tree(&[(b'l', Some(0)), (b't', None), (b'c', Some(1))]);
    assert_eq!(
        held_prefix(&w2, &t),
        Some(2),
        "re-send the config write only"
    );
    assert_eq!(held_prefix(&[], &t), None);
}

/// `sender` writes `payload`; every one of `nodes` delivers it.
fn write_everywhere(nodes: &mut [&mut Dfsm<Toy>], sender: usize, payload: [u8; 2], now: u32) {
    nodes[sender]
        .send_normal(1, payload.to_vec(), now)
        .expect("send");
    let sent = multicasts(&actions(nodes[sender]));
    let from = nodes[sender].local();
    for d in nodes.iter_mut() {
        d.on_deliver(from, sent[0].clone(), now);
        d.drain_actions().for_each(drop);
    }
}

/// ABA: another member's later write puts the key back to its value before
/// C's write. The state alone would say the majority never got C's write
/// (found by the DFSM simulation, seed 33): the later write supersedes it.
#[test]
fn a_later_write_of_the_key_supersedes_a_kept_own_write() {
    let (mut a, mut b, mut c) = synced_three();
    let mut all = [&mut a, &mut b, &mut c];
    write_everywhere(&mut all, 0, [1, 5], 10);
    write_everywhere(&mut all, 2, [1, 9], 10);
    write_everywhere(&mut all, 2, [2, 9], 10);
    assert_eq!(c.core.own_recent.len(), 2);
    let mut all = [&mut a, &mut b, &mut c];
    write_everywhere(&mut all, 0, [1, 5], 10);
    assert_eq!(
        c.core.own_recent.len(),
        1,
        "only the write of key 2 is kept"
    );
    // C is cut off and comes back: the key looks as before C's write, yet
    // nothing is sent again.
    c.on_confchg(&[C], &[], 11);
    a.on_confchg(&[A, B], &[], 11);
    b.on_confchg(&[A, B], &[], 11);
    pump(&mut [&mut a, &mut b]);
    pump(&mut [&mut c]);
    let sent = heal(&mut a, &mut b, &mut c);
    assert!(sent.is_empty(), "{sent:?}");
    assert_eq!(c.app().kv.get(&1), Some(&5));
}

/// C's own later write, queued during the resync and applied when it
/// completes, puts the key back: the unconfirmed earlier write is not sent
/// again (simulation seed 86).
#[test]
fn an_own_later_write_supersedes_an_unconfirmed_one() {
    let (mut a, mut b, mut c) = synced_three();
    let mut all = [&mut a, &mut b, &mut c];
    write_everywhere(&mut all, 0, [1, 5], 10);
    write_everywhere(&mut all, 2, [1, 9], 10);
    c.send_normal(1, vec![1, 5], 10).expect("send");
    let back = multicasts(&actions(&mut c));
    // A restarted member rejoins: C's recent write is unconfirmed.
    for d in [&mut a, &mut b, &mut c] {
        d.on_confchg(&[A, B, C], &[A], 11);
    }
    assert_eq!(c.core.own_unconfirmed.len(), 1);
    // C's second write is delivered during the resync (queued).
    for d in [&mut a, &mut b, &mut c] {
        d.on_deliver(C, back[0].clone(), 12);
    }
    let mut sent = Vec::new();
    loop {
        let mut out = Vec::new();
        for d in [&mut a, &mut b, &mut c] {
            let me = d.local();
            for action in d.drain_actions() {
                if let Action::Multicast(m) = action {
                    if matches!(m.body, MessageBody::Normal { .. }) {
                        sent.push(m.clone());
                    }
                    out.push((me, m));
                }
            }
        }
        if out.is_empty() {
            break;
        }
        for (sender, m) in out {
            for d in [&mut a, &mut b, &mut c] {
                d.on_deliver(sender, m.clone(), 13);
            }
        }
    }
    assert_eq!(c.mode(), Mode::Synced);
    assert!(sent.is_empty(), "{sent:?}");
    assert!(c.core.own_unconfirmed.is_empty());
    for d in [&a, &b, &c] {
        assert_eq!(d.app().kv.get(&1), Some(&5), "{}", d.local());
    }
}

/// The tree of a resync C leads holds C's unconfirmed write, but a
/// configuration change may come before the others adopted it: the write
/// stays kept, as if applied in this configuration (simulation seed 1419).
#[test]
fn a_held_own_write_stays_kept_until_a_majority_confirms_it() {
    let (mut a, mut b, mut c) = synced_three();
    own_write_then_cut(&mut a, &mut b, &mut c);
    let sent = heal(&mut a, &mut b, &mut c);
    assert!(sent.is_empty(), "{sent:?}");
    assert!(c.core.own_unconfirmed.is_empty());
    assert_eq!(
        c.core.own_recent.len(),
        1,
        "kept as a write of this configuration"
    );
    // Cut off again before anything confirmed it: unconfirmed again.
    c.on_confchg(&[C], &[], 14);
    assert_eq!(c.core.own_unconfirmed.len(), 1);
    // A change that keeps a majority and brings nobody in confirms it.
    let (mut a, mut b, mut c) = synced_three();
    own_write_then_cut(&mut a, &mut b, &mut c);
    heal(&mut a, &mut b, &mut c);
    c.on_confchg(&[B, C], &[], 14);
    assert!(c.core.own_recent.is_empty() && c.core.own_unconfirmed.is_empty());
}

/// A VERIFY is compared only with the checksum of the same round (id and
/// epoch); another round's is skipped, whatever it says.
#[test]
fn a_verify_of_another_round_is_skipped() {
    let (mut a, mut b) = synced_pair();
    assert!(a.request_verify(2));
    let req = multicasts(&actions(&mut a));
    for d in [&mut a, &mut b] {
        d.on_deliver(A, req[0].clone(), 3);
    }
    let MessageBody::Verify { epoch, csum_id, .. } = multicasts(&actions(&mut a))[0].body else {
        panic!("a VERIFY");
    };
    let other_epoch = Epoch {
        epoch: epoch.epoch + 1,
        ..epoch
    };
    let wrong = |epoch, csum_id| {
        state_msg(MessageBody::Verify {
            epoch,
            csum_id,
            checksum: [9; 32],
        })
    };
    b.on_deliver(A, wrong(other_epoch, csum_id), 4);
    b.on_deliver(A, wrong(epoch, csum_id + 1), 4);
    assert_eq!(b.mode(), Mode::Synced, "other rounds are skipped");
    b.on_deliver(A, wrong(epoch, csum_id), 4);
    assert_eq!(b.mode(), Mode::Leave, "this round's differs");
}

/// An application that gives an empty state makes the member leave at the
/// sync start (C: dfsm_get_state_fn failed).
#[test]
fn an_empty_state_leaves() {
    let mut a = dfsm(A, b"");
    let mut b = dfsm(B, b"x");
    a.on_confchg(&[A, B], &[B], 1);
    b.on_confchg(&[A, B], &[A], 1);
    let ss = multicasts(&actions(&mut a));
    a.on_deliver(A, ss[0].clone(), 2);
    assert_eq!(a.mode(), Mode::Leave);
    assert!(multicasts(&actions(&mut a)).is_empty(), "no STATE sent");
}

/// Writes of different keys the majority all lacks: all of them are sent
/// again, not only the last (simulation seed 12672: the first one's key
/// was as before it, yet it passed for held).
#[test]
fn lacked_own_writes_of_different_keys_are_all_sent_again() {
    let w = vec![own(b'a', Some(1), Some(2)), own(b'b', Some(3), Some(4))];
    assert_eq!(
        held_prefix(&w, &tree(&[(b'a', Some(1)), (b'b', Some(3))])),
        Some(0)
    );
    assert_eq!(
        held_prefix(&w, &tree(&[(b'a', Some(2)), (b'b', Some(3))])),
        Some(1)
    );
    assert_eq!(
        held_prefix(&w, &tree(&[(b'a', Some(2)), (b'b', Some(4))])),
        Some(2)
    );
    // The majority changed the first key since: the first counts as held.
    assert_eq!(
        held_prefix(&w, &tree(&[(b'a', Some(7)), (b'b', Some(3))])),
        Some(1)
    );
}

/// A key the majority changed back to its state before an older write does
/// not make that write, nor the held ones after it, count as lacked
/// (simulation seed 6080: the first write's key was deleted since, the
/// second is visibly held, the last is lacked).
#[test]
fn a_visibly_held_write_outweighs_an_older_key_changed_back() {
    let w = vec![
        own(b'a', None, Some(1)),
        own(b'c', Some(2), Some(3)),
        own(b'c', Some(3), Some(4)),
    ];
    let t = tree(&[(b'a', None), (b'c', Some(3))]);
    assert_eq!(held_prefix(&w, &t), Some(2));
}

/// A key the majority changed since supersedes the own writes of it (and
/// of the keys they share writes with), not the others: those are checked
/// alone (simulation seed 5503: a lacked write of another key was dropped
/// with the superseded one).
#[test]
fn only_the_writes_of_changed_keys_are_superseded() {
    let w = vec![
        own(b'c', Some(0), Some(1)),
        own(b'e', Some(2), Some(3)),
        own(b'c', Some(1), Some(4)),
        own(b'd', Some(5), Some(6)),
    ];
    let t = tree(&[(b'c', Some(1)), (b'e', Some(3)), (b'd', Some(9))]);
    assert_eq!(superseded_own(&w, &t), vec![false, false, false, true]);
    assert_eq!(
        held_prefix(&w[..3], &t),
        Some(2),
        "the write of c is re-sent"
    );
    // The atomic write whose target the majority rewrote: the whole chain.
    let t = tree(&[(b't', None), (b'c', Some(7))]);
    assert_eq!(superseded_own(&atomic_write(), &t), vec![true; 3]);
    // Nothing changed: nothing superseded.
    let t = tree(&[(b't', Some(5)), (b'c', Some(1))]);
    assert_eq!(superseded_own(&atomic_write(), &t), vec![false; 3]);
}

/// C is cut off right after its acknowledged write, and its daemon
/// restarts before the heal (an HA watchdog fences a node without quorum):
/// the write kept on disk at the cut is checked after the heal's resync and
/// sent again, as without the restart. What is kept changes only when the
/// unconfirmed writes do.
#[test]
fn an_own_write_kept_across_a_restart_is_sent_again_after_the_heal() {
    let (mut a, mut b, mut c) = synced_three();
    let mut seen = 0;
    assert_eq!(c.take_kept_if_changed(&mut seen), None, "nothing yet");
    own_write_then_cut(&mut a, &mut b, &mut c);
    let kept = c
        .take_kept_if_changed(&mut seen)
        .expect("the cut changed it");
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].payload, vec![1, 9]);
    assert_eq!(c.take_kept_if_changed(&mut seen), None, "unchanged since");
    let file = crate::kept::encode(&kept).expect("encode");
    // The restarted daemon: a new DFSM; the resync erases the write.
    let mut c = safe(C, b"x");
    c.restore_kept(crate::kept::decode(&file).expect("decode"));
    let sent = heal(&mut a, &mut b, &mut c);
    assert_eq!(normal_payloads(&sent), vec![vec![1, 9]], "sent again once");
    for d in [&a, &b, &c] {
        assert_eq!(d.app().kv.get(&1), Some(&9), "{} holds it", d.local());
    }
    let mut seen = 0;
    assert_eq!(
        c.take_kept_if_changed(&mut seen),
        Some(Vec::new()),
        "processed: nothing to keep"
    );
}

/// The own-write list is bounded: by age (a write more than
/// OWN_WRITES_KEPT_SECS older than the newest goes), by count and by
/// payload bytes (the oldest goes first), with its byte count kept exact.
#[test]
fn the_own_write_list_is_bounded() {
    let write = |time: u32, bytes: usize| OwnWrite {
        time,
        subtype: 1,
        payload: vec![0; bytes],
        before: Vec::new(),
        after: Vec::new(),
    };
    // Only a write dropped before its time says so (at debug level).
    let bound_reached = "bound reached";
    let logged = |f: &mut dyn FnMut()| pmxcfs_testkit::logged_at(tracing::Level::DEBUG, f).0;
    let mut d = dfsm(A, b"x");
    let core = &mut d.core;
    core.remember_own(write(100, 10));
    core.remember_own(write(100 + OWN_WRITES_KEPT_SECS, 20));
    assert_eq!(core.own_recent.len(), 2, "exactly the lifetime apart: kept");
    let log = logged(&mut || core.remember_own(write(101 + OWN_WRITES_KEPT_SECS, 30)));
    assert_eq!(core.own_recent.len(), 2, "one second more: the first goes");
    assert!(!log.contains(bound_reached), "it expired: {log}");
    assert_eq!(core.own_recent_bytes, 50);
    let mut d = dfsm(A, b"x");
    let core = &mut d.core;
    for _ in 0..OWN_WRITES_KEPT {
        core.remember_own(write(5, 1));
    }
    assert_eq!(core.own_recent.len(), OWN_WRITES_KEPT);
    let log = logged(&mut || core.remember_own(write(5, 7)));
    assert_eq!(core.own_recent.len(), OWN_WRITES_KEPT, "the oldest went");
    assert!(log.contains(bound_reached), "{log}");
    assert_eq!(core.own_recent_bytes, OWN_WRITES_KEPT - 1 + 7);
    let mut d = dfsm(A, b"x");
    let core = &mut d.core;
    core.remember_own(write(5, OWN_WRITES_KEPT_BYTES / 2));
    core.remember_own(write(5, OWN_WRITES_KEPT_BYTES / 2));
    assert_eq!(core.own_recent.len(), 2, "exactly at the byte bound: kept");
    core.remember_own(write(5, 1));
    assert_eq!(core.own_recent.len(), 2, "one byte more: the oldest went");
    assert_eq!(core.own_recent_bytes, OWN_WRITES_KEPT_BYTES / 2 + 1);
}

/// The index of kept keys (what lets a foreign write skip the walk of the
/// kept writes): it stays bounded while writes of ever new keys come and
/// go, and it never loses a key a kept write has, so a later write of that
/// key still supersedes it; a write of no kept key leaves every write kept.
#[test]
fn the_kept_keys_index_is_bounded_and_finds_every_kept_key() {
    let mut d = dfsm(A, b"x");
    let core = &mut d.core;
    let key = |i: usize| format!("/f{i}").into_bytes();
    let write = |i: usize| OwnWrite {
        time: 5,
        subtype: 1,
        payload: vec![1],
        before: vec![(key(i), None)],
        after: vec![(key(i), Some(1))],
    };
    let bound = 4 * OWN_WRITES_KEPT + 64;
    let mut largest = 0;
    for i in 0..10 * OWN_WRITES_KEPT {
        core.remember_own(write(i));
        assert!(
            core.own_keys.len() <= bound,
            "index of {} keys for {} writes",
            core.own_keys.len(),
            core.own_recent.len()
        );
        // Every write has its own key: a superset holds at least as many.
        assert!(core.own_keys.len() >= core.own_recent.len(), "write {i}");
        largest = largest.max(core.own_keys.len());
    }
    // The rebuild is amortized: it waits for the bound, not for every
    // write that drops a key from the lists.
    assert_eq!(largest, bound, "the index is rebuilt only at its bound");
    assert_eq!(core.own_recent.len(), OWN_WRITES_KEPT);
    let first_kept = 9 * OWN_WRITES_KEPT;
    for write in &core.own_recent {
        assert!(core.own_keys.contains(&write.after[0].0));
    }
    core.forget_overwritten_own(&[key(first_kept - 1), b"/other".to_vec()], true);
    assert_eq!(
        core.own_recent.len(),
        OWN_WRITES_KEPT,
        "no kept key changed"
    );
    core.forget_overwritten_own(&[key(first_kept)], true);
    assert_eq!(
        core.own_recent.len(),
        OWN_WRITES_KEPT - 1,
        "the oldest kept one"
    );
    core.own_unconfirmed = core.own_recent.drain(..).collect();
    core.own_recent_bytes = 0;
    core.forget_overwritten_own(&[key(first_kept + 1)], false);
    assert_eq!(
        core.own_unconfirmed.len(),
        OWN_WRITES_KEPT - 2,
        "unconfirmed too"
    );
    let keys: Vec<Vec<u8>> = core
        .own_unconfirmed
        .iter()
        .map(|w| w.after[0].0.clone())
        .collect();
    core.forget_overwritten_own(&keys, false);
    assert!(!core.keeps_own_writes());
    assert!(
        core.own_keys.is_empty(),
        "nothing kept: the index is emptied"
    );
}

/// Partitions in a row without a resync within a majority: the
/// unconfirmed writes keep the recent ones' bounds (count and bytes), the
/// oldest dropped first.
#[test]
fn the_unconfirmed_writes_are_bounded() {
    let write = |tag: u8, bytes: usize| OwnWrite {
        time: 5,
        subtype: 1,
        payload: {
            let mut payload = vec![0; bytes.max(1)];
            payload[0] = tag;
            payload
        },
        before: Vec::new(),
        after: Vec::new(),
    };
    let mut d = dfsm(A, b"x");
    let core = &mut d.core;
    for round in 0..3u8 {
        for _ in 0..OWN_WRITES_KEPT / 2 + 1 {
            core.own_recent.push_back(write(round, 1));
        }
        core.settle_own_writes(false);
    }
    assert_eq!(core.own_unconfirmed.len(), OWN_WRITES_KEPT);
    assert_eq!(core.own_unconfirmed[0].payload[0], 1, "round 0 went first");
    assert_eq!(core.own_unconfirmed.last().map(|w| w.payload[0]), Some(2));
    // Writes of half the byte bound, tagged 0, 1, ..., settled in batches
    // of the given sizes: the tags left unconfirmed.
    let halves = |batches: &[u8]| {
        let mut d = dfsm(A, b"x");
        let mut tag = 0;
        for &size in batches {
            for _ in 0..size {
                d.core
                    .own_recent
                    .push_back(write(tag, OWN_WRITES_KEPT_BYTES / 2));
                tag += 1;
            }
            d.core.settle_own_writes(false);
        }
        let tags: Vec<u8> = d
            .core
            .own_unconfirmed
            .iter()
            .map(|w| w.payload[0])
            .collect();
        tags
    };
    assert_eq!(
        halves(&[1, 1, 1]),
        vec![1, 2],
        "exactly at the byte bound: two kept"
    );
    // Several at once: as many of the oldest go as the bytes need.
    assert_eq!(halves(&[4]), vec![2, 3], "two of four at once");
    let mut d = dfsm(A, b"x");
    let core = &mut d.core;
    core.own_unconfirmed.push(write(8, 1));
    let log = pmxcfs_testkit::logged_at(tracing::Level::WARN, || {
        core.own_recent.push_back(write(9, 1));
        core.settle_own_writes(false)
    })
    .0;
    assert!(
        !log.contains("bound of unconfirmed"),
        "nothing dropped: {log}"
    );
}

/// A re-sent own write whose message is not applied (here: its multicast
/// failed) is unconfirmed again, to be checked at the next resync.
#[test]
fn a_re_sent_write_that_fails_is_checked_again() {
    let (mut a, mut b, mut c) = synced_three();
    own_write_then_cut(&mut a, &mut b, &mut c);
    c.app_mut().kv.clear();
    let sent = heal_failing(&mut a, &mut b, &mut c, true);
    assert_eq!(sent.len(), 1, "re-sent, and failed");
    assert!(c.core.own_resent.is_empty());
    assert_eq!(c.core.own_unconfirmed.len(), 1, "checked again later");
    assert_eq!(a.app().kv.get(&1), None);
}

/// A later write drops the kept writes it supersedes and keeps the books:
/// the recent writes' byte count, the kept list's change counter (only
/// when an unconfirmed write went) and the key index (kept while any
/// unconfirmed write is left).
#[test]
fn superseded_own_writes_go_and_the_books_follow() {
    let write = |key: u8, bytes: usize| OwnWrite {
        time: 5,
        subtype: 1,
        payload: vec![key; bytes],
        before: vec![(vec![key], None)],
        after: vec![(vec![key], Some(1))],
    };
    let mut d = dfsm(A, b"x");
    d.core.remember_own(write(1, 10));
    d.core.remember_own(write(2, 20));
    d.core.forget_overwritten_own(&[vec![1]], true);
    assert_eq!(d.core.own_recent.len(), 1);
    assert_eq!(d.core.own_recent_bytes, 20);

    d.core.remember_own(write(3, 5));
    d.core.settle_own_writes(false);
    assert_eq!(d.core.own_unconfirmed.len(), 2, "2 and 3");
    let mut seen = 0;
    assert!(d.take_kept_if_changed(&mut seen).is_some());
    d.core.remember_own(write(4, 1));
    d.core.forget_overwritten_own(&[vec![4]], false);
    assert_eq!(
        d.take_kept_if_changed(&mut seen),
        None,
        "no unconfirmed write went"
    );
    d.core.own_recent.clear();
    d.core.forget_overwritten_own(&[vec![2]], false);
    assert_eq!(
        d.take_kept_if_changed(&mut seen).map(|kept| kept.len()),
        Some(1),
        "write 2 went"
    );
    assert!(
        d.core.own_keys.contains(&vec![3]),
        "write 3 is still kept: its key stays findable"
    );
}

/// A confchg drops queue 2: only this node's own messages in it can be
/// re-sends of its kept writes (counts are per sender).
#[test]
fn a_dropped_sync_queue_drops_only_this_node_s_re_sends() {
    let mut lone = dfsm(A, b"x");
    lone.on_confchg(&[A], &[A], 1);
    assert_eq!(lone.core.mode, Mode::Synced);
    lone.send_normal(1, vec![3, 1], 2).expect("send");
    let message = multicasts(&actions(&mut lone))[0].clone();
    lone.core.own_resent.push((5, own(1, None, Some(1))));
    for (sender, kept) in [(B, 1), (A, 0)] {
        lone.core.sync_queue.push(QueuedMessage {
            sender,
            count: 5,
            msg: message.clone(),
        });
        lone.core.drop_sync_queue();
        assert_eq!(lone.core.own_resent.len(), kept, "{sender:?}");
    }
}

/// The local member is known once the CPG connection is up: it can be set
/// in mode START only. The leader is the lowest node id of the
/// configuration.
#[test]
fn the_local_member_is_set_only_before_the_first_configuration() {
    let mut d = dfsm(A, b"x");
    assert!(d.set_local(B));
    assert_eq!(d.local(), B);
    d.on_confchg(&[B], &[B], 1);
    assert_eq!(d.lowest_node_id(), 2);
    assert!(!d.set_local(C), "a configuration came");
    assert_eq!(d.local(), B);
    let debug = format!("{d:?}");
    assert!(
        debug.starts_with("Dfsm") && debug.contains("core"),
        "{debug}"
    );
}

/// A configuration is logged with its members once this member is in it
/// (not the ones it sees while it has not joined yet).
#[test]
fn members_are_logged_once_this_member_is_in() {
    let mut d = dfsm(A, b"x");
    let members = |d: &mut Dfsm<Toy>, all: &[MemberId], joined: &[MemberId], at| {
        pmxcfs_testkit::logged_at(tracing::Level::INFO, || d.on_confchg(all, joined, at)).0
    };
    let log = members(&mut d, &[B], &[B], 1);
    assert!(!log.contains("members:"), "not joined yet: {log}");
    let log = members(&mut d, &[A, B], &[A], 2);
    assert!(log.contains(&format!("members: {A}, {B}")), "{log}");
}

/// A member that left from SYNCED (write safety) still applies the NORMAL
/// messages delivered before its confchg (the others count it as synced
/// until then); in any other error mode, or having left from another
/// mode, it applies nothing, and a state message is never taken as one.
#[test]
fn only_a_member_that_left_from_synced_applies_until_its_confchg() {
    let (mut a, mut b, _c) = synced_three();
    b.send_normal(1, vec![5, 1], 3).expect("send");
    let normal = multicasts(&actions(&mut b))[0].clone();
    let cases = [
        (Mode::Leave, true, true),
        (Mode::Leave, false, false),
        (Mode::Error, true, false),
    ];
    for (mode, leaving_synced, applied) in cases {
        a.app_mut().delivered.clear();
        a.core.mode = mode;
        a.core.leaving_synced = leaving_synced;
        a.on_deliver(B, normal.clone(), 3);
        assert_eq!(
            a.app().delivered.len(),
            usize::from(applied),
            "{mode:?}, left from synced: {leaving_synced}"
        );
    }
    a.app_mut().delivered.clear();
    a.core.mode = Mode::Leave;
    a.core.leaving_synced = true;
    let state = Message {
        body: MessageBody::VerifyRequest {
            epoch: Epoch::default(),
            csum_id: 1,
        },
        ..normal
    };
    a.on_deliver(B, state, 3);
    assert!(a.app().delivered.is_empty(), "a state message");
}

/// Only another member's later write of a key supersedes a kept own
/// write: not an own write of that key that failed.
#[test]
fn a_failed_own_write_supersedes_nothing() {
    let (mut a, mut b, _c) = synced_three();
    let write = |d: &mut Dfsm<Toy>, from: &mut Dfsm<Toy>, payload: Vec<u8>, at| {
        from.send_normal(1, payload, at).expect("send");
        let message = multicasts(&actions(from))[0].clone();
        d.on_deliver(from.local(), message, at);
    };
    a.send_normal(1, vec![4, 1], 3).expect("send");
    let message = multicasts(&actions(&mut a))[0].clone();
    a.on_deliver(A, message, 3);
    assert_eq!(a.core.own_recent.len(), 1);
    a.app_mut().result = -17; // EEXIST
    a.send_normal(1, vec![4, 2], 4).expect("send");
    let message = multicasts(&actions(&mut a))[0].clone();
    a.on_deliver(A, message, 4);
    assert_eq!(
        a.core.own_recent.len(),
        1,
        "the failed one supersedes nothing"
    );
    a.app_mut().result = 0;
    write(&mut a, &mut b, vec![4, 3], 5);
    assert!(a.core.own_recent.is_empty(), "another member's later write");
}

/// A re-sent own write that is processed leaves the re-sent list, which
/// changes the kept list (the daemon rewrites its file).
#[test]
fn a_processed_re_send_changes_the_kept_list() {
    let (mut a, _b, _c) = synced_three();
    let count = a.send_normal(1, vec![6, 1], 3).expect("send");
    let message = multicasts(&actions(&mut a))[0].clone();
    a.core.own_resent.push((count, own(6, None, Some(1))));
    let mut seen = 0;
    assert_eq!(a.take_kept_if_changed(&mut seen), None);
    a.on_deliver(A, message, 3);
    assert!(a.core.own_resent.is_empty());
    assert_eq!(
        a.take_kept_if_changed(&mut seen).map(|kept| kept.len()),
        Some(0),
        "nothing kept for the file any more"
    );
}

/// A dropped re-send changes the kept list (the daemon rewrites its file
/// of them), also when the re-send was taken for the file before.
#[test]
fn a_dropped_re_send_changes_the_kept_list() {
    let mut d = dfsm(A, b"x");
    d.core.own_resent.push((7, own(1, None, Some(1))));
    let mut seen = 0;
    assert_eq!(d.take_kept_if_changed(&mut seen), None, "as taken");
    d.core.resend_dropped(8);
    assert_eq!(
        d.take_kept_if_changed(&mut seen),
        None,
        "not ours: nothing changed"
    );
    d.core.resend_dropped(7);
    assert!(d.core.own_resent.is_empty());
    assert_eq!(
        d.take_kept_if_changed(&mut seen).map(|kept| kept.len()),
        Some(1),
        "unconfirmed again"
    );
    assert_eq!(d.core.own_unconfirmed.len(), 1);
}
