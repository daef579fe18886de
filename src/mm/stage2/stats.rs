//! Per-VM stage-2 accounting and counters.
#![forbid(unsafe_code)]

use core::fmt;

/// Kinds of stage-2 fault, as decoded from ESR_EL2.ISS.DFSC/IFSC.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FaultKind {
    Translation = 0,
    AccessFlag = 1,
    Permission = 2,
}

/// Counters of one VM's stage-2 tables. All are plain numbers updated under the VM's table
/// lock; [`Stage2Stats::table_pages`] is exact at every moment the lock is free.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Stage2Stats {
    /// Table pages in use, the PGD's pages included.
    pub table_pages: u64,
    /// Faults handled, by [`FaultKind`] and reported level (0..=3).
    pub faults: [[u64; 4]; 3],
    /// Live leaf mappings by size: [4 KiB, 2 MiB, 1 GiB].
    pub mapped: [u64; 3],
    /// Leaf mappings ever installed by size: [4 KiB, 2 MiB, 1 GiB].
    pub installed: [u64; 3],
    /// `TLBI IPAS2E1IS` issued.
    pub tlbi_ipa: u64,
    /// `TLBI VMALLE1IS` issued.
    pub tlbi_vmalle1: u64,
    /// `TLBI VMALLS12E1IS` issued.
    pub tlbi_vmalls12: u64,
    /// Local (this PE only) invalidations of one IPA after a permission fault.
    pub tlbi_local: u64,
    /// Leaves made executable, each preceded by instruction-cache maintenance of its range.
    pub icache_syncs: u64,
    /// Valid-to-valid replacements done with break-before-make.
    pub bbm: u64,
    /// Entries whose permissions were relaxed in place (no BBM, no TLBI).
    pub relaxed: u64,
    /// Entries whose permissions were restricted in place (TLBI, no break).
    pub restricted: u64,
    /// Permission faults resolved by relaxing in place (dirty-log writes included).
    pub perm_fault_relaxed: u64,
    /// Faults that found the access already allowed (another vCPU mapped it first).
    pub spurious_faults: u64,
    /// Blocks split into tables.
    pub splits: u64,
    /// Tables merged back into blocks.
    pub merges: u64,
    /// Pages marked dirty by write faults.
    pub dirty_marked: u64,
    /// Fault-path retries after the vCPU memory cache ran out.
    pub cache_retries: u64,
}

impl Stage2Stats {
    pub fn faults_of(&self, kind: FaultKind) -> u64 {
        self.faults[kind as usize].iter().sum()
    }
}

impl fmt::Display for Stage2Stats {
    /// One line: `tables=.. faults(T/AF/P)=.. mapped(4K/2M/1G)=.. tlbi(ipa/e1/s12)=.. ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tables={} faults(T/AF/P)={}/{}/{} mapped(4K/2M/1G)={}/{}/{} \
             installed(4K/2M/1G)={}/{}/{} tlbi(ipa/e1/s12/local)={}/{}/{}/{} icache={} bbm={} relaxed={} \
             restricted={} perm-relax={} spurious={} splits={} merges={} dirty={} retries={}",
            self.table_pages,
            self.faults_of(FaultKind::Translation),
            self.faults_of(FaultKind::AccessFlag),
            self.faults_of(FaultKind::Permission),
            self.mapped[0],
            self.mapped[1],
            self.mapped[2],
            self.installed[0],
            self.installed[1],
            self.installed[2],
            self.tlbi_ipa,
            self.tlbi_vmalle1,
            self.tlbi_vmalls12,
            self.tlbi_local,
            self.icache_syncs,
            self.bbm,
            self.relaxed,
            self.restricted,
            self.perm_fault_relaxed,
            self.spurious_faults,
            self.splits,
            self.merges,
            self.dirty_marked,
            self.cache_retries,
        )
    }
}
