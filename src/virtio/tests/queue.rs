use super::*;
use crate::addr::Ipa;
use crate::virtio::mem::GuestMemory;
use crate::virtio::queue::*;
use proptest::prelude::*;

const Q: u64 = RAM + 0x1_0000;
const DATA: u64 = RAM + 0x4_0000;

fn setup(size: u16) -> (Arc<FakePhys>, Arc<FakeRam>, QueueLayout) {
    let phys = arena(1);
    let m = vm(&phys, 0);
    let layout = FakeDriverQueue::<FakeRam>::layout_at(Q, size);
    (phys, m, layout)
}

fn collect(m: &FakeRam, c: &Chain) -> Vec<Result<Descriptor, ChainError>> {
    c.descriptors(m).collect()
}

fn d(addr: u64, len: u32, writable: bool) -> Result<Descriptor, ChainError> {
    Ok(Descriptor {
        addr: Ipa::new(addr),
        len,
        writable,
    })
}

#[test]
fn a_direct_chain_comes_out_in_order() {
    let (_p, m, l) = setup(8);
    let mut drv = FakeDriverQueue::new(&*m, l);
    drv.set_desc(3, DATA, 16, F_NEXT, 5);
    drv.set_desc(5, DATA + 0x100, 100, F_NEXT | F_WRITE, 1);
    drv.set_desc(1, DATA + 0x200, 1, F_WRITE, 0);
    drv.publish(3);
    let mut q = Queue::new(l, 8, false, false, &*m).unwrap();
    let c = q.pop(&*m).unwrap().unwrap();
    assert_eq!(c.head, 3);
    assert_eq!(
        collect(&m, &c),
        vec![
            d(DATA, 16, false),
            d(DATA + 0x100, 100, true),
            d(DATA + 0x200, 1, true)
        ]
    );
    assert_eq!(q.pop(&*m).unwrap(), None);
    q.add_used(&*m, 3, 101).unwrap();
    assert_eq!(drv.take_used(), vec![(3, 101)]);
}

#[test]
fn loops_and_overlong_chains_stop_at_the_queue_size() {
    let (_p, m, l) = setup(4);
    let mut drv = FakeDriverQueue::new(&*m, l);
    drv.set_desc(0, DATA, 8, F_NEXT, 1);
    drv.set_desc(1, DATA, 8, F_NEXT, 0);
    drv.publish(0);
    let mut q = Queue::new(l, 4, false, false, &*m).unwrap();
    let c = q.pop(&*m).unwrap().unwrap();
    let got = collect(&m, &c);
    assert_eq!(got.len(), 5, "4 descriptors then the error");
    assert_eq!(got.last(), Some(&Err(ChainError::TooLong)));
    // A `next` past the table.
    drv.set_desc(2, DATA, 8, F_NEXT, 4);
    drv.publish(2);
    let c = q.pop(&*m).unwrap().unwrap();
    assert_eq!(
        collect(&m, &c).last(),
        Some(&Err(ChainError::IndexOutOfRange { index: 4 }))
    );
}

#[test]
fn bad_buffers_end_the_chain_with_an_error() {
    let (_p, m, l) = setup(4);
    let mut drv = FakeDriverQueue::new(&*m, l);
    let mut q = Queue::new(l, 4, false, false, &*m).unwrap();
    let cases: [(u64, u32, u16, ChainError); 4] = [
        (DATA, 0, 0, ChainError::ZeroLength),
        (u64::MAX - 4, 16, 0, ChainError::Overflow),
        (
            RAM + RAM_SIZE - 8,
            16,
            0,
            ChainError::NotRam(crate::virtio::mem::MemError::NotRam {
                ipa: Ipa::new(RAM + RAM_SIZE),
            }),
        ),
        (
            0x1000,
            8,
            F_WRITE,
            ChainError::NotRam(crate::virtio::mem::MemError::NotRam {
                ipa: Ipa::new(0x1000),
            }),
        ),
    ];
    for (addr, len, flags, want) in cases {
        drv.set_desc(0, addr, len, flags, 0);
        drv.publish(0);
        let c = q.pop(&*m).unwrap().unwrap();
        assert_eq!(collect(&m, &c), vec![Err(want)], "{addr:#x}+{len}");
    }
    // Readable after writable (§2.7.4.2).
    drv.set_desc(0, DATA, 8, F_WRITE | F_NEXT, 1);
    drv.set_desc(1, DATA, 8, 0, 0);
    drv.publish(0);
    let c = q.pop(&*m).unwrap().unwrap();
    assert_eq!(
        collect(&m, &c).last(),
        Some(&Err(ChainError::ReadableAfterWritable))
    );
    // More than 4 GiB in one chain.
    drv.set_desc(0, RAM, u32::MAX, F_NEXT, 1);
    drv.set_desc(1, RAM, 8, 0, 0);
    drv.publish(0);
    let c = q.pop(&*m).unwrap().unwrap();
    assert!(collect(&m, &c).iter().any(|r| r.is_err()));
}

#[test]
fn indirect_tables_follow_their_own_rules() {
    let (_p, m, l) = setup(4);
    let mut drv = FakeDriverQueue::new(&*m, l);
    let table = Ipa::new(RAM + 0x3_0000);
    // A two-entry table: readable then writable.
    drv.set_desc_at(table, 0, DATA, 10, F_NEXT, 1);
    drv.set_desc_at(table, 1, DATA + 0x100, 20, F_WRITE, 0);
    drv.set_desc(0, table.as_u64(), 32, F_INDIRECT, 0);
    drv.publish(0);
    let mut q = Queue::new(l, 4, false, true, &*m).unwrap();
    let c = q.pop(&*m).unwrap().unwrap();
    assert_eq!(
        collect(&m, &c),
        vec![d(DATA, 10, false), d(DATA + 0x100, 20, true)]
    );

    let bad = |table_len: u32, flags: u16, inner_flags: u16, negotiated: bool| {
        let mut drv = FakeDriverQueue::new(&*m, l);
        drv.set_desc_at(table, 0, DATA, 10, inner_flags, 0);
        drv.set_desc(1, table.as_u64(), table_len, flags, 0);
        drv.publish(1);
        let mut q = Queue::new(l, 4, false, negotiated, &*m).unwrap();
        let c = q.pop(&*m).unwrap().unwrap();
        collect(&m, &c).pop().unwrap()
    };
    assert_eq!(
        bad(32, F_INDIRECT, 0, false),
        Err(ChainError::IndirectNotNegotiated)
    );
    assert_eq!(
        bad(24, F_INDIRECT, 0, true),
        Err(ChainError::BadIndirectLength { len: 24 })
    );
    assert_eq!(
        bad(0, F_INDIRECT, 0, true),
        Err(ChainError::BadIndirectLength { len: 0 })
    );
    assert_eq!(
        bad(16 * 2000, F_INDIRECT, 0, true),
        Err(ChainError::BadIndirectLength { len: 16 * 2000 })
    );
    assert_eq!(
        bad(32, F_INDIRECT | F_NEXT, 0, true),
        Err(ChainError::IndirectWithNext)
    );
    assert_eq!(
        bad(16, F_INDIRECT, F_INDIRECT, true),
        Err(ChainError::NestedIndirect)
    );
    // The WRITE flag on the descriptor naming the table is ignored.
    assert_eq!(bad(16, F_INDIRECT | F_WRITE, 0, true), d(DATA, 10, false));
    // An indirect table that loops on itself.
    assert_eq!(bad(16, F_INDIRECT, F_NEXT, true), Err(ChainError::TooLong));
}

#[test]
fn layouts_are_checked_once_at_enable() {
    let (_p, m, l) = setup(8);
    assert!(Queue::validate(&l, 8, &*m).is_ok());
    let with = |f: &dyn Fn(&mut QueueLayout)| {
        let mut x = l;
        f(&mut x);
        Queue::validate(&x, 8, &*m)
    };
    assert_eq!(
        with(&|x| x.size = 6),
        Err(QueueError::BadSize { size: 6, max: 8 })
    );
    assert_eq!(
        with(&|x| x.size = 16),
        Err(QueueError::BadSize { size: 16, max: 8 })
    );
    assert_eq!(
        with(&|x| x.size = 0),
        Err(QueueError::BadSize { size: 0, max: 8 })
    );
    assert!(matches!(
        with(&|x| x.desc = x.desc + 8),
        Err(QueueError::Misaligned {
            part: RingPart::Descriptors,
            ..
        })
    ));
    assert!(matches!(
        with(&|x| x.avail = x.avail + 1),
        Err(QueueError::Misaligned {
            part: RingPart::Avail,
            ..
        })
    ));
    assert!(matches!(
        with(&|x| x.used = x.used + 2),
        Err(QueueError::Misaligned {
            part: RingPart::Used,
            ..
        })
    ));
    assert!(matches!(
        with(&|x| x.used = Ipa::new(RAM + RAM_SIZE - 16)),
        Err(QueueError::NotRam {
            part: RingPart::Used,
            ..
        })
    ));
    assert!(matches!(
        with(&|x| x.desc = Ipa::new(0)),
        Err(QueueError::NotRam { .. })
    ));
}

#[test]
fn an_avail_index_jump_or_a_bad_head_breaks_the_queue() {
    let (_p, m, l) = setup(8);
    let mut drv = FakeDriverQueue::new(&*m, l);
    let mut q = Queue::new(l, 8, false, false, &*m).unwrap();
    drv.set_avail_idx(9);
    assert_eq!(
        q.pop(&*m),
        Err(QueueError::AvailIdxJump {
            next_avail: 0,
            avail_idx: 9
        })
    );
    drv.set_avail_idx(0);
    drv.set_desc(0, DATA, 8, 0, 0);
    drv.publish(8);
    assert_eq!(
        q.pop(&*m),
        Err(QueueError::HeadOutOfRange { head: 8, size: 8 })
    );
    // Exactly a queue size ahead is fine.
    let mut drv = FakeDriverQueue::new(&*m, l);
    let mut q = Queue::new(l, 8, false, false, &*m).unwrap();
    for _ in 0..8 {
        drv.publish(0);
    }
    assert_eq!(q.pending(&*m), Ok(8));
}

#[test]
fn event_idx_interrupts_only_when_used_event_is_passed() {
    let (_p, m, l) = setup(8);
    let mut drv = FakeDriverQueue::new(&*m, l);
    let mut q = Queue::new(l, 8, true, false, &*m).unwrap();
    drv.set_desc(0, DATA, 8, 0, 0);
    // The driver wants an interrupt when used.idx passes 2 (used_event = 2).
    drv.set_used_event(2);
    let mut irqs = Vec::new();
    for _ in 0..5 {
        drv.publish(0);
        let c = q.pop(&*m).unwrap().unwrap();
        q.add_used(&*m, c.head, 0).unwrap();
        irqs.push(q.needs_interrupt(&*m).unwrap());
    }
    assert_eq!(irqs, vec![false, false, true, false, false]);
    // Nothing new: no interrupt.
    assert!(!q.needs_interrupt(&*m).unwrap());
    // Two at once that step over used_event = 6 together.
    drv.set_used_event(6);
    for _ in 0..2 {
        drv.publish(0);
        let c = q.pop(&*m).unwrap().unwrap();
        q.add_used(&*m, c.head, 0).unwrap();
    }
    assert!(q.needs_interrupt(&*m).unwrap());
}

#[test]
fn without_event_idx_the_no_interrupt_flag_is_honoured() {
    let (_p, m, l) = setup(8);
    let mut drv = FakeDriverQueue::new(&*m, l);
    let mut q = Queue::new(l, 8, false, false, &*m).unwrap();
    drv.set_desc(0, DATA, 8, 0, 0);
    drv.set_avail_flags(1);
    drv.publish(0);
    let c = q.pop(&*m).unwrap().unwrap();
    q.add_used(&*m, c.head, 0).unwrap();
    assert!(!q.needs_interrupt(&*m).unwrap());
    drv.set_avail_flags(0);
    drv.publish(0);
    let c = q.pop(&*m).unwrap().unwrap();
    q.add_used(&*m, c.head, 0).unwrap();
    assert!(q.needs_interrupt(&*m).unwrap());
}

#[test]
fn a_busy_queue_with_event_idx_notifies_once_per_drain() {
    let (_p, m, l) = setup(64);
    let mut drv = FakeDriverQueue::new(&*m, l);
    let mut q = Queue::new(l, 64, true, false, &*m).unwrap();
    drv.set_desc(0, DATA, 8, 0, 0);
    let mut kicks = 0;
    // The driver adds 200 chains, 10 at a time, faster than the device: the device drains
    // after each batch (on the exit the first notification caused).
    for _ in 0..20 {
        for _ in 0..10 {
            let old = drv.avail_idx();
            drv.publish(0);
            if drv.would_notify(old, true) {
                kicks += 1;
            }
        }
        loop {
            while let Some(c) = q.pop(&*m).unwrap() {
                q.add_used(&*m, c.head, 0).unwrap();
            }
            if !q.arm_notification(&*m).unwrap() {
                break;
            }
        }
    }
    assert_eq!(kicks, 20, "one notification per batch of 10");
    // Without EVENT_IDX every chain would have been a notification.
    let mut drv2 = FakeDriverQueue::new(&*m, l);
    drv2.set_desc(0, DATA, 8, 0, 0);
    let old = drv2.avail_idx();
    drv2.publish(0);
    assert!(drv2.would_notify(old, false));
}

#[test]
fn a_receive_queue_asks_for_no_notifications() {
    let (_p, m, l) = setup(8);
    for event_idx in [false, true] {
        let mut drv = FakeDriverQueue::new(&*m, l);
        let mut q = Queue::new(l, 8, event_idx, false, &*m).unwrap();
        q.suppress_notifications(&*m).unwrap();
        drv.set_desc(0, DATA, 8, F_WRITE, 0);
        for _ in 0..8 {
            let old = drv.avail_idx();
            drv.publish(0);
            assert!(!drv.would_notify(old, event_idx), "event_idx {event_idx}");
        }
    }
}

#[test]
fn undo_pop_gives_chains_back_in_order() {
    let (_p, m, l) = setup(8);
    let mut drv = FakeDriverQueue::new(&*m, l);
    let mut q = Queue::new(l, 8, false, false, &*m).unwrap();
    for h in [1u16, 2] {
        drv.set_desc(h, DATA, 8, 0, 0);
        drv.publish(h);
    }
    let a = q.pop(&*m).unwrap().unwrap();
    let b = q.pop(&*m).unwrap().unwrap();
    q.undo_pop(2);
    assert_eq!(q.pop(&*m).unwrap(), Some(a));
    assert_eq!(q.pop(&*m).unwrap(), Some(b));
}

/// One chain of the model: its buffers (length, device-writable), readable first.
fn chain_strategy() -> impl Strategy<Value = (Vec<(u32, bool)>, bool)> {
    (
        prop::collection::vec((1u32..3000, any::<bool>()), 1..6),
        any::<bool>(),
    )
        .prop_map(|(mut bufs, indirect)| {
            bufs.sort_by_key(|b| b.1);
            (bufs, indirect)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Chains built by a model driver come out exactly as built, over several laps of the
    /// ring, with direct and indirect descriptors, and the used ring returns what the
    /// device said.
    #[test]
    fn chains_match_the_model(
        size_log in 2u32..6,
        rounds in prop::collection::vec(prop::collection::vec(chain_strategy(), 1..4), 1..12),
    ) {
        let size = 1u16 << size_log;
        let (phys, m, l) = setup(size);
        let mut drv = FakeDriverQueue::new(&*m, l);
        let mut q = Queue::new(l, size, true, true, &*m).unwrap();
        let table_base = RAM + 0x3_0000;
        for round in rounds {
            // Free descriptors: the whole table each round (everything was returned).
            let mut next_desc: u16 = 0;
            let mut model = Vec::new();
            let mut data = DATA;
            for (ci, (bufs, indirect)) in round.iter().enumerate() {
                let direct_needed = if *indirect { 1 } else { bufs.len() as u16 };
                if next_desc + direct_needed > size {
                    break;
                }
                let head = next_desc;
                let mut expect = Vec::new();
                let table = Ipa::new(table_base + ci as u64 * 0x1000);
                for (i, &(len, w)) in bufs.iter().enumerate() {
                    let last = i + 1 == bufs.len();
                    let flags = (if w { F_WRITE } else { 0 }) | (if last { 0 } else { F_NEXT });
                    if *indirect {
                        drv.set_desc_at(table, i as u16, data, len, flags, i as u16 + 1);
                    } else {
                        drv.set_desc(next_desc, data, len, flags, next_desc + 1);
                        next_desc += 1;
                    }
                    expect.push(d(data, len, w));
                    data += u64::from(len);
                }
                if *indirect {
                    drv.set_desc(next_desc, table.as_u64(), 16 * bufs.len() as u32, F_INDIRECT, 0);
                    next_desc += 1;
                }
                drv.publish(head);
                model.push((head, expect));
            }
            for (head, expect) in &model {
                let c = q.pop(&*m).unwrap().unwrap();
                prop_assert_eq!(c.head, *head);
                prop_assert_eq!(&collect(&m, &c), expect);
                let written: u32 = expect.iter().flatten().filter(|d| d.writable).map(|d| d.len).sum();
                q.add_used(&*m, c.head, written).unwrap();
            }
            prop_assert_eq!(q.pop(&*m).unwrap(), None);
            let used = drv.take_used();
            let want: Vec<(u32, u32)> = model
                .iter()
                .map(|(h, e)| (u32::from(*h), e.iter().flatten().filter(|d| d.writable).map(|d| d.len).sum()))
                .collect();
            prop_assert_eq!(used, want);
        }
        assert_guards_intact(&phys, 1);
    }

    /// Whatever the driver writes into the rings, walking chains terminates within the
    /// bound, yields only buffers wholly in RAM, and leaves memory outside RAM alone.
    #[test]
    fn garbage_rings_never_escape_ram(
        table in prop::collection::vec(any::<u8>(), 16 * 16),
        heads in prop::collection::vec(any::<u16>(), 1..20),
        ram_addrs in any::<bool>(),
        avail_idx in any::<u16>(),
    ) {
        let (phys, m, l) = setup(16);
        let mut drv = FakeDriverQueue::new(&*m, l);
        let mut bytes = table.clone();
        if ram_addrs {
            // Point most addresses into RAM so chains get long before failing.
            for e in bytes.chunks_mut(16) {
                let a = RAM + u64::from(u16::from_le_bytes([e[0], e[1]])) * 16;
                e[..8].copy_from_slice(&a.to_le_bytes());
                e[14] &= 0x1f;
                e[15] = 0;
            }
        }
        m.write(l.desc, &bytes).unwrap();
        for h in &heads {
            drv.publish(*h);
        }
        drv.set_avail_idx(avail_idx);
        let mut q = Queue::new(l, 16, true, true, &*m).unwrap();
        for _ in 0..40 {
            match q.pop(&*m) {
                Ok(Some(c)) => {
                    let mut n = 0;
                    for r in c.descriptors(&*m) {
                        n += 1;
                        prop_assert!(n <= 16 + MAX_INDIRECT as usize + 1);
                        if let Ok(dd) = r {
                            prop_assert!(m.check(dd.addr, u64::from(dd.len), false).is_ok());
                        }
                    }
                    let _ = q.add_used(&*m, c.head, 0);
                }
                Ok(None) | Err(_) => break,
            }
        }
        assert_guards_intact(&phys, 1);
    }
}
