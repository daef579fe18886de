//! Split virtqueues (VIRTIO 1.2 §2.7) from the device's side: taking descriptor chains from
//! the available ring, walking them safely, returning them through the used ring, and the
//! notification suppression that lets a busy queue run with few exits (`VIRTIO_F_EVENT_IDX`).
//!
//! Everything the driver wrote is untrusted. A [`Queue`] is validated once when the driver
//! enables it (size a power of two no larger than the device's maximum, rings aligned as
//! §2.7 asks and wholly in RAM); after that each access is still bounds-checked through
//! [`GuestMemory`]. Errors come in two kinds:
//! - [`QueueError`]: the queue itself is broken (an `avail.idx` more than the queue size ahead,
//!   a head index past the table, a ring that stopped being RAM). The device cannot go on
//!   with this queue: the transport sets `DEVICE_NEEDS_RESET`.
//! - [`ChainError`]: one descriptor chain is malformed (a loop or a chain longer than the
//!   queue, a buffer outside RAM, a zero-length or wrapping buffer, a bad indirect table).
//!   The device drops that request, returns the chain with length 0 so the driver gets its
//!   buffers back, and goes on.
//!
//! The ring layouts are read byte-wise through [`GuestMemory`] rather than through
//! `virtio_spec::virtq`'s structures: those are views of memory the driver owns (references
//! and pointers into the rings), which a device must never form over memory the guest can
//! change under it. The flag values do come from `virtio_spec`.
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::sync::atomic::{Ordering, fence};

use super::mem::{GuestMemory, MemError, copy_between};
use crate::addr::Ipa;

/// The largest queue size the specification allows (§2.7: "Queue Size ... 32768").
pub const MAX_QUEUE_SIZE: u16 = 32768;
/// One descriptor: le64 addr, le32 len, le16 flags, le16 next (§2.7.5).
pub const DESC_SIZE: u64 = 16;
/// Most descriptors an indirect table may hold (QEMU's `VIRTQUEUE_MAX_SIZE`): bounds the
/// work one request can cost, independently of the queue size the driver chose.
pub const MAX_INDIRECT: u32 = 1024;

const DESC_F_NEXT: u16 = virtio_spec::virtq::DescF::NEXT.bits().to_ne();
const DESC_F_WRITE: u16 = virtio_spec::virtq::DescF::WRITE.bits().to_ne();
const DESC_F_INDIRECT: u16 = virtio_spec::virtq::DescF::INDIRECT.bits().to_ne();
const AVAIL_F_NO_INTERRUPT: u16 = virtio_spec::virtq::AvailF::NO_INTERRUPT.bits().to_ne();
const USED_F_NO_NOTIFY: u16 = virtio_spec::virtq::UsedF::NO_NOTIFY.bits().to_ne();

/// Alignment of the three parts of a split virtqueue (§2.7, table "Virtqueue Part
/// Alignment").
pub const DESC_ALIGN: u64 = 16;
pub const AVAIL_ALIGN: u64 = 2;
pub const USED_ALIGN: u64 = 4;

/// Where the driver put a queue and how large it is (the transport's queue registers).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct QueueLayout {
    pub size: u16,
    /// Descriptor area (`QueueDesc`).
    pub desc: Ipa,
    /// Driver area: the available ring (`QueueDriver`).
    pub avail: Ipa,
    /// Device area: the used ring (`QueueDevice`).
    pub used: Ipa,
}

/// A part of a virtqueue, for errors.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RingPart {
    Descriptors,
    Avail,
    Used,
}

/// The queue as a whole is unusable; the device needs a reset.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum QueueError {
    /// Zero, above the device's maximum, or not a power of two.
    BadSize {
        size: u16,
        max: u16,
    },
    Misaligned {
        part: RingPart,
        ipa: Ipa,
    },
    /// A ring is not wholly in the VM's RAM.
    NotRam {
        part: RingPart,
        err: MemError,
    },
    /// `avail.idx` is more than the queue size ahead of what the device has taken.
    AvailIdxJump {
        next_avail: u16,
        avail_idx: u16,
    },
    /// The available ring names a descriptor past the end of the table.
    HeadOutOfRange {
        head: u16,
        size: u16,
    },
}

/// One descriptor chain is malformed; the request is dropped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ChainError {
    /// A `next` index past the end of its table.
    IndexOutOfRange {
        index: u32,
    },
    /// More descriptors than the table holds: a loop, or a chain longer than the queue.
    TooLong,
    ZeroLength,
    /// A buffer whose end wraps the address space, or a chain of more than 2^32 - 1 bytes
    /// (§2.7.5.2: "Drivers MUST NOT add a descriptor chain longer than 2^32 bytes").
    Overflow,
    /// A buffer or indirect table outside the VM's RAM.
    NotRam(MemError),
    /// `VIRTQ_DESC_F_INDIRECT` without `VIRTIO_F_INDIRECT_DESC` negotiated.
    IndirectNotNegotiated,
    /// An indirect descriptor inside an indirect table (§2.7.5.3.1).
    NestedIndirect,
    /// `VIRTQ_DESC_F_INDIRECT` together with `VIRTQ_DESC_F_NEXT` (§2.7.5.3.1).
    IndirectWithNext,
    /// An indirect table of zero length, a length not a multiple of 16, or more than
    /// [`MAX_INDIRECT`] entries.
    BadIndirectLength {
        len: u32,
    },
    /// A device-readable buffer after a device-writable one (§2.7.4.2).
    ReadableAfterWritable,
    /// The request does not have the shape the device needs (too short, wrong direction).
    Malformed,
}

impl From<MemError> for ChainError {
    fn from(e: MemError) -> Self {
        ChainError::NotRam(e)
    }
}

/// One buffer of a chain, already checked to be wholly in RAM and non-empty.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Descriptor {
    pub addr: Ipa,
    pub len: u32,
    /// Device-writable (`VIRTQ_DESC_F_WRITE`).
    pub writable: bool,
}

/// A descriptor chain taken from the available ring; return it with [`Queue::add_used`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Chain {
    pub head: u16,
    table: Ipa,
    size: u16,
    indirect_ok: bool,
}

impl Chain {
    /// The chain's buffers in order. Stops after the last one or after the first error.
    pub fn descriptors<'m, M: GuestMemory + ?Sized>(&self, mem: &'m M) -> Descriptors<'m, M> {
        Descriptors {
            mem,
            table: self.table,
            table_len: u32::from(self.size),
            next: u32::from(self.head),
            ttl: u32::from(self.size),
            in_indirect: false,
            indirect_ok: self.indirect_ok,
            total: 0,
            seen_writable: false,
            done: false,
        }
    }

    /// Collects the chain into its device-readable and device-writable parts.
    pub fn split<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        readable: &mut Buffers,
        writable: &mut Buffers,
    ) -> Result<(), ChainError> {
        readable.clear();
        writable.clear();
        for d in self.descriptors(mem) {
            let d = d?;
            if d.writable {
                writable.push(d.addr, d.len);
            } else {
                readable.push(d.addr, d.len);
            }
        }
        Ok(())
    }
}

/// Iterator over a chain's buffers; see [`Chain::descriptors`].
pub struct Descriptors<'m, M: ?Sized> {
    mem: &'m M,
    table: Ipa,
    table_len: u32,
    next: u32,
    /// Descriptors left before the chain counts as too long (loops end here).
    ttl: u32,
    in_indirect: bool,
    indirect_ok: bool,
    total: u64,
    seen_writable: bool,
    done: bool,
}

impl<M: GuestMemory + ?Sized> Descriptors<'_, M> {
    fn step(&mut self) -> Result<Option<Descriptor>, ChainError> {
        loop {
            if self.next >= self.table_len {
                return Err(ChainError::IndexOutOfRange { index: self.next });
            }
            if self.ttl == 0 {
                return Err(ChainError::TooLong);
            }
            self.ttl -= 1;
            let raw: [u8; 16] = self
                .mem
                .read_array(self.table + u64::from(self.next) * DESC_SIZE)?;
            let addr = u64::from_le_bytes([
                raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
            ]);
            let len = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
            let flags = u16::from_le_bytes([raw[12], raw[13]]);
            let next = u16::from_le_bytes([raw[14], raw[15]]);
            let addr = Ipa::new(addr);

            if flags & DESC_F_INDIRECT != 0 {
                if !self.indirect_ok {
                    return Err(ChainError::IndirectNotNegotiated);
                }
                if self.in_indirect {
                    return Err(ChainError::NestedIndirect);
                }
                if flags & DESC_F_NEXT != 0 {
                    return Err(ChainError::IndirectWithNext);
                }
                let entries = len / DESC_SIZE as u32;
                if len == 0 || !len.is_multiple_of(DESC_SIZE as u32) || entries > MAX_INDIRECT {
                    return Err(ChainError::BadIndirectLength { len });
                }
                if addr.checked_add(u64::from(len)).is_none() {
                    return Err(ChainError::Overflow);
                }
                self.mem.check(addr, u64::from(len), false)?;
                // The WRITE flag of the descriptor naming the table is ignored (§2.7.5.3.2).
                self.table = addr;
                self.table_len = entries;
                self.next = 0;
                self.ttl = entries;
                self.in_indirect = true;
                continue;
            }
            if len == 0 {
                return Err(ChainError::ZeroLength);
            }
            if addr.checked_add(u64::from(len)).is_none() {
                return Err(ChainError::Overflow);
            }
            let writable = flags & DESC_F_WRITE != 0;
            if !writable && self.seen_writable {
                return Err(ChainError::ReadableAfterWritable);
            }
            self.seen_writable |= writable;
            self.total += u64::from(len);
            if self.total > u64::from(u32::MAX) {
                return Err(ChainError::Overflow);
            }
            self.mem.check(addr, u64::from(len), writable)?;
            if flags & DESC_F_NEXT != 0 {
                self.next = u32::from(next);
            } else {
                self.done = true;
            }
            return Ok(Some(Descriptor {
                addr,
                len,
                writable,
            }));
        }
    }
}

impl<M: GuestMemory + ?Sized> Iterator for Descriptors<'_, M> {
    type Item = Result<Descriptor, ChainError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(d) => d.map(Ok),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// One direction of a chain (its readable or its writable buffers) as one byte stream.
/// Reused between requests: clearing keeps the allocation, so a steady state allocates
/// nothing on the exit path.
#[derive(Clone, Debug, Default)]
pub struct Buffers {
    segs: Vec<(Ipa, u32)>,
    total: u64,
}

impl Buffers {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn clear(&mut self) {
        self.segs.clear();
        self.total = 0;
    }
    pub fn push(&mut self, addr: Ipa, len: u32) {
        self.segs.push((addr, len));
        self.total += u64::from(len);
    }
    /// Total bytes.
    pub fn len(&self) -> u64 {
        self.total
    }
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
    pub fn segments(&self) -> &[(Ipa, u32)] {
        &self.segs
    }

    /// Calls `f(ipa, stream_offset, n)` for each guest range of the stream bytes
    /// `[offset, offset + len)`, in order. Returns the bytes visited (less than `len` when
    /// the stream ends first).
    pub fn for_each_range(&self, offset: u64, len: u64, mut f: impl FnMut(Ipa, u64, u64)) -> u64 {
        let mut skip = offset;
        let mut done = 0u64;
        for &(addr, n) in &self.segs {
            let n = u64::from(n);
            if skip >= n {
                skip -= n;
                continue;
            }
            let take = (n - skip).min(len - done);
            f(addr + skip, offset + done, take);
            done += take;
            skip = 0;
            if done == len {
                break;
            }
        }
        done
    }

    /// Reads stream bytes `[offset, offset + buf.len())`; false when the stream is shorter.
    pub fn read<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<bool, MemError> {
        let mut res = Ok(());
        let got = self.for_each_range(offset, buf.len() as u64, |ipa, at, n| {
            let at = (at - offset) as usize;
            if res.is_ok() {
                res = mem.read(ipa, &mut buf[at..at + n as usize]);
            }
        });
        res.map(|()| got == buf.len() as u64)
    }

    /// Writes `data` at stream offset `offset`; false when the stream is shorter (the bytes
    /// that fit are written).
    pub fn write<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        offset: u64,
        data: &[u8],
    ) -> Result<bool, MemError> {
        let mut res = Ok(());
        let put = self.for_each_range(offset, data.len() as u64, |ipa, at, n| {
            let at = (at - offset) as usize;
            if res.is_ok() {
                res = mem.write(ipa, &data[at..at + n as usize]);
            }
        });
        res.map(|()| put == data.len() as u64)
    }
}

/// Copies `len` bytes from stream offset `src_off` of `src` (in `src_mem`) to stream offset
/// `dst_off` of `dst` (in `dst_mem`), guest range to guest range with no bounce buffer.
/// Returns the bytes copied (less than `len` when either stream ends first).
pub fn copy_streams<D, S>(
    dst_mem: &D,
    dst: &Buffers,
    dst_off: u64,
    src_mem: &S,
    src: &Buffers,
    src_off: u64,
    len: u64,
) -> Result<u64, MemError>
where
    D: GuestMemory + ?Sized,
    S: GuestMemory<Phys = D::Phys> + ?Sized,
{
    let mut done = 0u64;
    let mut res = Ok(());
    // Walk the source ranges; for each, walk the matching destination ranges.
    src.for_each_range(src_off, len, |s_ipa, s_at, s_n| {
        if res.is_err() {
            return;
        }
        let d_start = dst_off + (s_at - src_off);
        let copied = dst.for_each_range(d_start, s_n, |d_ipa, d_at, d_n| {
            if res.is_ok() {
                let s = s_ipa + (d_at - d_start);
                res = copy_between(dst_mem, d_ipa, src_mem, s, d_n);
            }
        });
        done += copied;
    });
    res.map(|()| done)
}

/// A split virtqueue the driver has set up, with the device's private state.
#[derive(Clone, Debug)]
pub struct Queue {
    layout: QueueLayout,
    event_idx: bool,
    indirect: bool,
    /// The next available-ring entry the device will take.
    next_avail: u16,
    /// `avail.idx` as last read: entries up to it need no new read of the index.
    avail_idx: u16,
    /// The next used-ring entry the device will fill (the used index it publishes).
    next_used: u16,
    /// `next_used` when the device last decided whether to interrupt.
    signalled_used: u16,
    /// `VIRTQ_USED_F_NO_NOTIFY` set by [`Queue::disable_notifications`] (without EVENT_IDX).
    no_notify: bool,
}

impl Queue {
    /// Checks `layout` as the device must before using it: a size that is a power of two in
    /// `1..=max_size`, rings aligned (§2.7 table 2.3) and wholly in RAM.
    pub fn validate<M: GuestMemory + ?Sized>(
        layout: &QueueLayout,
        max_size: u16,
        mem: &M,
    ) -> Result<(), QueueError> {
        let size = layout.size;
        if size == 0 || size > max_size.min(MAX_QUEUE_SIZE) || !size.is_power_of_two() {
            return Err(QueueError::BadSize {
                size,
                max: max_size,
            });
        }
        let n = u64::from(size);
        let parts = [
            (
                RingPart::Descriptors,
                layout.desc,
                DESC_ALIGN,
                DESC_SIZE * n,
                false,
            ),
            (RingPart::Avail, layout.avail, AVAIL_ALIGN, 6 + 2 * n, false),
            (RingPart::Used, layout.used, USED_ALIGN, 6 + 8 * n, true),
        ];
        for (part, ipa, align, len, write) in parts {
            if !ipa.is_aligned(align) {
                return Err(QueueError::Misaligned { part, ipa });
            }
            mem.check(ipa, len, write)
                .map_err(|err| QueueError::NotRam { part, err })?;
        }
        Ok(())
    }

    /// A validated queue, starting at ring index 0 (a queue starts there after reset). With
    /// `event_idx` the device publishes `avail_event`, so that is written now.
    pub fn new<M: GuestMemory + ?Sized>(
        layout: QueueLayout,
        max_size: u16,
        event_idx: bool,
        indirect: bool,
        mem: &M,
    ) -> Result<Self, QueueError> {
        Self::validate(&layout, max_size, mem)?;
        let q = Self {
            layout,
            event_idx,
            indirect,
            next_avail: 0,
            avail_idx: 0,
            next_used: 0,
            signalled_used: 0,
            no_notify: false,
        };
        if event_idx {
            q.ring_write_u16(mem, q.avail_event_addr(), 0, RingPart::Used)?;
        }
        Ok(q)
    }

    pub fn layout(&self) -> &QueueLayout {
        &self.layout
    }
    pub fn size(&self) -> u16 {
        self.layout.size
    }
    pub fn next_avail(&self) -> u16 {
        self.next_avail
    }
    pub fn next_used(&self) -> u16 {
        self.next_used
    }

    fn used_event_addr(&self) -> Ipa {
        self.layout.avail + 4 + 2 * u64::from(self.layout.size)
    }
    fn avail_event_addr(&self) -> Ipa {
        self.layout.used + 4 + 8 * u64::from(self.layout.size)
    }

    fn ring_read_u16<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        ipa: Ipa,
        part: RingPart,
    ) -> Result<u16, QueueError> {
        mem.read_u16(ipa)
            .map_err(|err| QueueError::NotRam { part, err })
    }
    fn ring_write_u16<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        ipa: Ipa,
        value: u16,
        part: RingPart,
    ) -> Result<(), QueueError> {
        mem.write_u16(ipa, value)
            .map_err(|err| QueueError::NotRam { part, err })
    }

    /// Reads `avail.idx` and checks it: at most a queue size ahead of `next_avail`.
    fn refresh_avail_idx<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<u16, QueueError> {
        let idx = self.ring_read_u16(mem, self.layout.avail + 2, RingPart::Avail)?;
        if idx.wrapping_sub(self.next_avail) > self.layout.size {
            return Err(QueueError::AvailIdxJump {
                next_avail: self.next_avail,
                avail_idx: idx,
            });
        }
        self.avail_idx = idx;
        Ok(idx)
    }

    /// Chains the driver has made available and the device has not taken.
    pub fn pending<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<u16, QueueError> {
        let idx = self.refresh_avail_idx(mem)?;
        Ok(idx.wrapping_sub(self.next_avail))
    }

    /// Takes the next available chain, if any.
    pub fn pop<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<Option<Chain>, QueueError> {
        if self.avail_idx == self.next_avail && self.refresh_avail_idx(mem)? == self.next_avail {
            return Ok(None);
        }
        // The ring entry and the descriptors were written before `avail.idx` (the driver's
        // write barrier, §2.7.13.2); read them only after it.
        fence(Ordering::Acquire);
        let size = self.layout.size;
        let slot = self.layout.avail + 4 + 2 * u64::from(self.next_avail % size);
        let head = self.ring_read_u16(mem, slot, RingPart::Avail)?;
        if head >= size {
            return Err(QueueError::HeadOutOfRange { head, size });
        }
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(Some(Chain {
            head,
            table: self.layout.desc,
            size,
            indirect_ok: self.indirect,
        }))
    }

    /// Gives back the last `n` chains taken by [`Queue::pop`] and not yet used (a frame that
    /// did not fit the receive buffers after all). They will be taken again.
    pub fn undo_pop(&mut self, n: u16) {
        self.next_avail = self.next_avail.wrapping_sub(n);
    }

    /// Returns chain `head` to the driver with `len` bytes written into its writable buffers,
    /// and publishes the new used index (after the element and the data, §2.7.14).
    pub fn add_used<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        head: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        self.add_used_all(mem, &[(head, len)])
    }

    /// Returns several chains (`(head, bytes written)` each) and publishes them with one store
    /// of the used index, so that the driver never sees some of them without the others: a
    /// frame in mergeable receive buffers announces its `num_buffers` in the first one, and
    /// Linux drops the frame if the rest are not in the used ring when it looks (§5.1.6.4).
    pub fn add_used_all<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        entries: &[(u16, u32)],
    ) -> Result<(), QueueError> {
        for (i, &(head, len)) in entries.iter().enumerate() {
            let at = self.next_used.wrapping_add(i as u16) % self.layout.size;
            let slot = self.layout.used + 4 + 8 * u64::from(at);
            let mut elem = [0u8; 8];
            elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
            elem[4..].copy_from_slice(&len.to_le_bytes());
            mem.write(slot, &elem).map_err(|err| QueueError::NotRam {
                part: RingPart::Used,
                err,
            })?;
        }
        fence(Ordering::Release);
        self.next_used = self.next_used.wrapping_add(entries.len() as u16);
        self.ring_write_u16(mem, self.layout.used + 2, self.next_used, RingPart::Used)
    }

    /// After chains were added to the used ring: whether the driver wants a used-buffer
    /// notification for them (§2.7.10). With `VIRTIO_F_EVENT_IDX`, only when `used_event` lies
    /// among the entries added since the last decision (`vring_need_event`); without it,
    /// unless the driver set `VIRTQ_AVAIL_F_NO_INTERRUPT`. False when nothing was added.
    pub fn needs_interrupt<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<bool, QueueError> {
        let (old, new) = (self.signalled_used, self.next_used);
        if old == new {
            return Ok(false);
        }
        self.signalled_used = new;
        // The used index store must be visible before the driver's suppression field is read,
        // or the driver may go to sleep on an index it has not seen.
        fence(Ordering::SeqCst);
        if self.event_idx {
            let event = self.ring_read_u16(mem, self.used_event_addr(), RingPart::Avail)?;
            Ok(need_event(event, new, old))
        } else {
            let flags = self.ring_read_u16(mem, self.layout.avail, RingPart::Avail)?;
            Ok(flags & AVAIL_F_NO_INTERRUPT == 0)
        }
    }

    /// After the device has taken everything: ask for a notification at the next new chain
    /// (`avail_event = next_avail` with `VIRTIO_F_EVENT_IDX`; without it, clear
    /// `VIRTQ_USED_F_NO_NOTIFY` if [`Queue::disable_notifications`] set it) and re-check, so
    /// that a chain made available meanwhile is not left waiting for a notification that
    /// will not come (§2.7.10: the driver stores its index, then reads the suppression field;
    /// the device stores the field, then reads the index; one of them sees the other). True
    /// when chains are pending.
    pub fn arm_notification<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<bool, QueueError> {
        if self.event_idx {
            self.ring_write_u16(
                mem,
                self.avail_event_addr(),
                self.next_avail,
                RingPart::Used,
            )?;
        } else if self.no_notify {
            self.ring_write_u16(mem, self.layout.used, 0, RingPart::Used)?;
            self.no_notify = false;
        }
        fence(Ordering::SeqCst);
        Ok(self.pending(mem)? != 0)
    }

    /// While a poller drains the queue: the driver need not notify. With
    /// `VIRTIO_F_EVENT_IDX` nothing is written: `avail_event` stays where
    /// [`Queue::arm_notification`] put it, which the notifying driver has just passed, so it
    /// notifies no more until the device arms again (or the 16-bit index comes round, a
    /// harmless extra notification). Without it, `VIRTQ_USED_F_NO_NOTIFY`.
    pub fn disable_notifications<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<(), QueueError> {
        if !self.event_idx && !self.no_notify {
            self.ring_write_u16(mem, self.layout.used, USED_F_NO_NOTIFY, RingPart::Used)?;
            self.no_notify = true;
        }
        Ok(())
    }

    /// Asks the driver not to notify for this queue (a receive queue: the device takes
    /// buffers when a frame arrives and needs no notification of new ones). With
    /// `VIRTIO_F_EVENT_IDX`: `avail_event` just behind `next_avail`, which no new chain
    /// reaches until the index wraps; without it, `VIRTQ_USED_F_NO_NOTIFY`.
    pub fn suppress_notifications<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<(), QueueError> {
        if self.event_idx {
            let behind = self.next_avail.wrapping_sub(1);
            self.ring_write_u16(mem, self.avail_event_addr(), behind, RingPart::Used)
        } else {
            self.ring_write_u16(mem, self.layout.used, USED_F_NO_NOTIFY, RingPart::Used)
        }
    }
}

/// `vring_need_event` (§2.7.10.1 / Linux `virtio_ring.h`): whether moving an index from `old`
/// to `new` passes `event`, in 16-bit wrapping arithmetic.
pub const fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}
