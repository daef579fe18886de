//! virtio-blk (VIRTIO 1.2 §5.2): one request queue over a [`BlockStore`], the VM's disk image
//! from the ramdisk.
//!
//! Features offered: `SEG_MAX`, `SIZE_MAX`, `BLK_SIZE` (512), `FLUSH`, `RO` for a read-only
//! disk, and the ring features `INDIRECT_DESC` and `EVENT_IDX`; requests `IN`, `OUT`,
//! `FLUSH`, `GET_ID`. Two stores: [`ReadOnlyDisk`] serves the ramdisk's bytes in place (no
//! copy); [`CopiedDisk`] is a private copy whose writes last as long as the device object
//! (the runtime keeps it across guest resets, so they survive SYSTEM_RESET, not a power-off
//! of the hypervisor).
//!
//! Requests (§5.2.6): a 16-byte device-readable header (type, reserved, sector), data, and
//! a one-byte device-writable status at the very end; the device makes no assumption about
//! how these are split into descriptors (§2.7.4). Answers:
//! - a write to a read-only disk, a sector range past the end, a data length that is not a
//!   multiple of 512, a header shorter than 16 bytes or data in the wrong direction:
//!   `VIRTIO_BLK_S_IOERR`, nothing transferred;
//! - an unknown type: `VIRTIO_BLK_S_UNSUPP`;
//! - a chain with no writable byte for the status, or a malformed chain: dropped, returned
//!   with length 0, counted.
//!
//! Work per notification is bounded by requests ([`NOTIFY_REQUEST_BUDGET`]) and by data
//! bytes ([`NOTIFY_DATA_BUDGET`], plus the request that crosses it): the rest of the queue
//! is deferred (`notify` returns true) and finished by later passes of the transport's
//! `run_deferred`, which the runtime calls at once (docs/virtio.md, "Wiring it in").
#![forbid(unsafe_code)]

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

use super::mem::GuestMemory;
use super::queue::{Buffers, Queue, QueueError, QueueLayout};
use super::{
    BadInput, DeviceError, DeviceSignals, INT_USED_BUFFER, QueueLayouts, VirtioDevice, device_id,
    features as f,
};

/// The unit of `sector` and `capacity` (§5.2.4), whatever `blk_size` says.
pub const SECTOR_SIZE: u64 = 512;
/// `blk_size`: the logical block size offered (512, so any disk image works).
pub const BLOCK_SIZE: u32 = 512;
/// `seg_max`: most data buffers in one request.
pub const SEG_MAX: u32 = 126;
/// `size_max`: largest data buffer.
pub const SIZE_MAX: u32 = 1 << 20;
/// Most data bytes one request may move (bounds the work of one request).
pub const MAX_REQUEST_BYTES: u64 = SEG_MAX as u64 * SIZE_MAX as u64;
/// Queue size offered (QueueNumMax).
pub const QUEUE_SIZE: u16 = 256;
/// Most requests one notification (or one deferred pass) handles.
pub const NOTIFY_REQUEST_BUDGET: usize = 4 * QUEUE_SIZE as usize;
/// Data bytes after which one notification (or one deferred pass) stops and defers the rest
/// of the queue; the request that crosses it is finished, so a pass moves less than this
/// plus [`MAX_REQUEST_BYTES`]. A notification runs on the guest's exit with interrupts
/// masked at EL2, so this is how long the CPU cannot take its guest's timer, a kick or the
/// scheduler's tick. Counting requests alone bounded nothing: every available slot may name
/// the same 126 MiB chain, 256 of them ~31 GiB in one exit. 8 MiB is a few milliseconds of
/// copying at the roughly 2-4 GB/s a Pi 4's Cortex-A72 copies memory at, about one Linux
/// tick (HZ=250), and 6 of Linux's largest default requests (`max_sectors_kb` 1280), so an
/// ordinary batch is done in one pass; a 64 MiB direct read takes 8 passes, each an extra
/// exit of about a thousand instructions beside millions of copying.
pub const NOTIFY_DATA_BUDGET: u64 = 8 << 20;
/// `VIRTIO_BLK_ID_BYTES`: the length of the GET_ID answer.
pub const ID_BYTES: usize = 20;

/// Request types (§5.2.6).
const T_IN: u32 = virtio_spec::blk::T::In as u32;
const T_OUT: u32 = virtio_spec::blk::T::Out as u32;
const T_FLUSH: u32 = virtio_spec::blk::T::Flush as u32;
const T_GET_ID: u32 = virtio_spec::blk::T::GetId as u32;
/// Status values (§5.2.6).
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

/// What a disk is stored in.
pub trait BlockStore: Send {
    /// Size in bytes.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn writable(&self) -> bool;
    /// A non-empty run of stored bytes from `offset` (< `len()`), at most `max` bytes.
    fn read_piece(&self, offset: u64, max: u64) -> &[u8];
    /// The stored bytes from `offset` (< `len()`) to overwrite, at most `max`; `None` for a
    /// read-only store.
    fn write_piece(&mut self, offset: u64, max: u64) -> Option<&mut [u8]>;
}

/// A read-only disk served in place from bytes the hypervisor keeps for as long as the VM
/// (the ramdisk's file data).
pub struct ReadOnlyDisk<B> {
    bytes: B,
}

impl<B: AsRef<[u8]> + Send> ReadOnlyDisk<B> {
    pub fn new(bytes: B) -> Self {
        Self { bytes }
    }
}

impl<B: AsRef<[u8]> + Send> BlockStore for ReadOnlyDisk<B> {
    fn len(&self) -> u64 {
        self.bytes.as_ref().len() as u64
    }
    fn writable(&self) -> bool {
        false
    }
    fn read_piece(&self, offset: u64, max: u64) -> &[u8] {
        let b = self.bytes.as_ref();
        let start = offset as usize;
        let end = start.saturating_add(max as usize).min(b.len());
        &b[start.min(end)..end]
    }
    fn write_piece(&mut self, _offset: u64, _max: u64) -> Option<&mut [u8]> {
        None
    }
}

/// A writable disk: a private copy of the image in 1 MiB chunks (no single huge allocation).
pub struct CopiedDisk {
    chunks: Vec<Vec<u8>>,
    len: u64,
}

impl CopiedDisk {
    pub const CHUNK: usize = 1 << 20;

    pub fn new(image: &[u8]) -> Self {
        Self {
            chunks: image.chunks(Self::CHUNK).map(<[u8]>::to_vec).collect(),
            len: image.len() as u64,
        }
    }
    /// A zero-filled disk of `len` bytes.
    pub fn zeroed(len: u64) -> Self {
        let mut chunks = Vec::new();
        let mut left = len as usize;
        while left > 0 {
            let n = left.min(Self::CHUNK);
            chunks.push(vec![0u8; n]);
            left -= n;
        }
        Self { chunks, len }
    }
}

impl BlockStore for CopiedDisk {
    fn len(&self) -> u64 {
        self.len
    }
    fn writable(&self) -> bool {
        true
    }
    fn read_piece(&self, offset: u64, max: u64) -> &[u8] {
        let (i, at) = (offset as usize / Self::CHUNK, offset as usize % Self::CHUNK);
        let c = &self.chunks[i];
        let end = at.saturating_add(max as usize).min(c.len());
        &c[at..end]
    }
    fn write_piece(&mut self, offset: u64, max: u64) -> Option<&mut [u8]> {
        let (i, at) = (offset as usize / Self::CHUNK, offset as usize % Self::CHUNK);
        let c = &mut self.chunks[i];
        let end = at.saturating_add(max as usize).min(c.len());
        Some(&mut c[at..end])
    }
}

/// Request counters.
#[derive(Default)]
pub struct BlkStats {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub flushes: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Requests answered IOERR or UNSUPP.
    pub errors: AtomicU64,
}

struct BlkState<S> {
    store: S,
    queue: Option<Queue>,
    readable: Buffers,
    writable: Buffers,
}

/// A virtio block device over `S`, in the VM whose RAM is `M`.
pub struct BlkDevice<M, S> {
    mem: M,
    signals: Arc<DeviceSignals>,
    state: Mutex<BlkState<S>>,
    read_only: bool,
    capacity_sectors: u64,
    id: [u8; ID_BYTES],
    stats: BlkStats,
    /// [`NOTIFY_DATA_BUDGET`] unless a test or the fuzzer set another.
    data_budget: u64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A request's outcome: its status, the bytes written into the chain before the status, and
/// the data bytes copied either way (what the notification's budget is charged).
struct Done {
    status: u8,
    data_written: u64,
    moved: u64,
}

impl Done {
    const fn status(status: u8) -> Self {
        Self {
            status,
            data_written: 0,
            moved: 0,
        }
    }
    /// A failed transfer after `moved` bytes were copied.
    const fn failed_after(moved: u64) -> Self {
        Self {
            status: S_IOERR,
            data_written: 0,
            moved,
        }
    }
}

impl<M: GuestMemory, S: BlockStore> BlkDevice<M, S> {
    /// `read_only` forces a read-only disk even over a writable store. `id` is the GET_ID
    /// answer (the serial Linux shows in `/sys/block/vda/serial`), cut to 20 bytes. The last
    /// partial sector of a store whose size is not a multiple of 512 is not visible.
    pub fn new(mem: M, store: S, read_only: bool, id: &[u8], signals: Arc<DeviceSignals>) -> Self {
        let mut id_bytes = [0u8; ID_BYTES];
        let n = id.len().min(ID_BYTES);
        id_bytes[..n].copy_from_slice(&id[..n]);
        Self {
            mem,
            signals,
            read_only: read_only || !store.writable(),
            capacity_sectors: store.len() / SECTOR_SIZE,
            state: Mutex::new(BlkState {
                store,
                queue: None,
                readable: Buffers::new(),
                writable: Buffers::new(),
            }),
            id: id_bytes,
            stats: BlkStats::default(),
            data_budget: NOTIFY_DATA_BUDGET,
        }
    }

    /// Another data budget per notification than [`NOTIFY_DATA_BUDGET`] (the fuzzer uses a
    /// small one so that its small requests meet it).
    pub fn with_data_budget(mut self, bytes: u64) -> Self {
        self.data_budget = bytes;
        self
    }

    pub fn stats(&self) -> &BlkStats {
        &self.stats
    }
    pub fn read_only(&self) -> bool {
        self.read_only
    }
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    /// The byte range of a data transfer, if it is whole sectors inside the disk.
    fn range(&self, sector: u64, len: u64) -> Option<u64> {
        let start = sector.checked_mul(SECTOR_SIZE)?;
        let end = start.checked_add(len)?;
        (len.is_multiple_of(SECTOR_SIZE)
            && len <= MAX_REQUEST_BYTES
            && end <= self.capacity_sectors * SECTOR_SIZE)
            .then_some(start)
    }

    /// Serves one request: (the used length, the data bytes copied).
    fn handle(&self, st: &mut BlkState<S>, chain: &super::queue::Chain) -> (u32, u64) {
        let BlkState {
            store,
            readable,
            writable,
            ..
        } = st;
        if chain.split(&self.mem, readable, writable).is_err() {
            self.signals.bad.record(BadInput::BadChain);
            return (0, 0);
        }
        let Some(status_at) = writable.len().checked_sub(1) else {
            // Nowhere to put the status: the request cannot even be failed.
            self.signals.bad.record(BadInput::BadRequest);
            return (0, 0);
        };
        let done = self.execute(store, readable, writable, status_at);
        if done.status != S_OK {
            bump(&self.stats.errors, 1);
        }
        let ok = writable
            .write(&self.mem, status_at, &[done.status])
            .unwrap_or(false);
        if !ok {
            return (0, done.moved);
        }
        // The used length counts every byte written: data and status (§5.2.6.1).
        ((done.data_written + 1) as u32, done.moved)
    }

    fn execute(
        &self,
        store: &mut S,
        readable: &Buffers,
        writable: &Buffers,
        status_at: u64,
    ) -> Done {
        let mut hdr = [0u8; 16];
        if !readable.read(&self.mem, 0, &mut hdr).unwrap_or(false) {
            self.signals.bad.record(BadInput::BadRequest);
            return Done::status(S_IOERR);
        }
        let kind = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let sector = u64::from_le_bytes([
            hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14], hdr[15],
        ]);
        let readable_data = readable.len() - 16;
        // Data before the status byte, for requests the device writes into.
        let writable_data = status_at;
        match kind {
            T_IN => {
                if readable_data != 0 {
                    self.signals.bad.record(BadInput::BadRequest);
                    return Done::status(S_IOERR);
                }
                let Some(start) = self.range(sector, writable_data) else {
                    return Done::status(S_IOERR);
                };
                let mut off = 0u64;
                while off < writable_data {
                    let piece = store.read_piece(start + off, writable_data - off);
                    if piece.is_empty() || !writable.write(&self.mem, off, piece).unwrap_or(false) {
                        return Done::failed_after(off);
                    }
                    off += piece.len() as u64;
                }
                bump(&self.stats.reads, 1);
                bump(&self.stats.bytes_read, writable_data);
                Done {
                    status: S_OK,
                    data_written: writable_data,
                    moved: writable_data,
                }
            }
            T_OUT => {
                if writable_data != 0 {
                    self.signals.bad.record(BadInput::BadRequest);
                    return Done::status(S_IOERR);
                }
                if self.read_only {
                    // §5.2.6.2: IOERR, and no data written.
                    return Done::status(S_IOERR);
                }
                let Some(start) = self.range(sector, readable_data) else {
                    return Done::status(S_IOERR);
                };
                let mut off = 0u64;
                while off < readable_data {
                    let Some(piece) = store.write_piece(start + off, readable_data - off) else {
                        return Done::failed_after(off);
                    };
                    let n = piece.len() as u64;
                    if n == 0 || !readable.read(&self.mem, 16 + off, piece).unwrap_or(false) {
                        return Done::failed_after(off);
                    }
                    off += n;
                }
                bump(&self.stats.writes, 1);
                bump(&self.stats.bytes_written, readable_data);
                Done {
                    status: S_OK,
                    data_written: 0,
                    moved: readable_data,
                }
            }
            // Memory-backed: every completed write is already durable for the VM's lifetime.
            T_FLUSH => {
                bump(&self.stats.flushes, 1);
                Done::status(S_OK)
            }
            T_GET_ID => {
                let n = (writable_data as usize).min(ID_BYTES);
                if !writable.write(&self.mem, 0, &self.id[..n]).unwrap_or(false) {
                    return Done::status(S_IOERR);
                }
                Done {
                    status: S_OK,
                    data_written: n as u64,
                    moved: n as u64,
                }
            }
            _ => Done::status(S_UNSUPP),
        }
    }

    /// Processes requests until the queue is empty, [`NOTIFY_REQUEST_BUDGET`] chains were
    /// handled or the data budget was reached; true when chains are left.
    fn process(&self) -> Result<bool, QueueError> {
        let mut st = self.state.lock();
        let Some(mut q) = st.queue.take() else {
            return Ok(false);
        };
        let res = self.process_queue(&mut st, &mut q);
        st.queue = Some(q);
        let more = res?;
        Ok(more)
    }

    fn process_queue(&self, st: &mut BlkState<S>, q: &mut Queue) -> Result<bool, QueueError> {
        let mut handled = 0usize;
        let mut moved = 0u64;
        let spent = |handled: usize, moved: u64| {
            handled >= NOTIFY_REQUEST_BUDGET || moved >= self.data_budget
        };
        let more = loop {
            while let Some(chain) = q.pop(&self.mem)? {
                let (used, data) = self.handle(st, &chain);
                q.add_used(&self.mem, chain.head, used)?;
                handled += 1;
                moved += data;
                if spent(handled, moved) {
                    break;
                }
            }
            if spent(handled, moved) {
                break q.pending(&self.mem)? != 0;
            }
            if !q.arm_notification(&self.mem)? {
                break false;
            }
        };
        if q.needs_interrupt(&self.mem)? {
            self.signals.irq.raise(INT_USED_BUFFER);
        }
        Ok(more)
    }
}

/// Bytes of `virtio_blk_config` exposed: capacity .. blk_size and the fields up to
/// `num_queues`, which read as 0 (their features are not offered).
const CONFIG_LEN: usize = 36;

impl<M: GuestMemory, S: BlockStore> VirtioDevice for BlkDevice<M, S> {
    fn device_id(&self) -> u32 {
        device_id(virtio_spec::Id::Block)
    }
    fn offered_features(&self) -> u64 {
        let ro = if self.read_only { f::BLK_RO } else { 0 };
        f::VERSION_1
            | f::INDIRECT_DESC
            | f::EVENT_IDX
            | f::BLK_SEG_MAX
            | f::BLK_SIZE_MAX
            | f::BLK_BLK_SIZE
            | f::BLK_FLUSH
            | ro
    }
    fn num_queues(&self) -> u16 {
        1
    }
    fn queue_max_size(&self) -> u16 {
        QUEUE_SIZE
    }
    fn validate_queue(&self, layout: &QueueLayout) -> Result<(), QueueError> {
        Queue::validate(layout, QUEUE_SIZE, &self.mem)
    }
    fn config_len(&self) -> usize {
        CONFIG_LEN
    }
    fn read_config(&self, offset: usize, out: &mut [u8]) {
        let mut c = [0u8; CONFIG_LEN];
        c[0..8].copy_from_slice(&self.capacity_sectors.to_le_bytes());
        c[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c[20..24].copy_from_slice(&BLOCK_SIZE.to_le_bytes());
        if let Some(src) = c.get(offset..offset + out.len()) {
            out.copy_from_slice(src);
        }
    }
    fn activate(&self, features: u64, queues: &QueueLayouts) -> Result<(), DeviceError> {
        let mut st = self.state.lock();
        st.queue = match queues.first().copied().flatten() {
            Some(layout) => Some(Queue::new(
                layout,
                QUEUE_SIZE,
                features & f::EVENT_IDX != 0,
                features & f::INDIRECT_DESC != 0,
                &self.mem,
            )?),
            None => None,
        };
        Ok(())
    }
    fn reset(&self) {
        self.state.lock().queue = None;
    }
    fn notify(&self, queue: u16) -> Result<bool, DeviceError> {
        if queue != 0 {
            return Ok(false);
        }
        Ok(self.process()?)
    }
}
