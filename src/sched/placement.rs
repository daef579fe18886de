//! Which physical CPU each vCPU of a new VM runs on.
//!
//! vCPUs do not migrate: placement is decided once, when a VM is admitted (at boot or by the
//! console's `start`), and holds until the VM ends. A VM's `physical_cpus` is taken as given
//! (it may name CPUs that other vCPUs, of this or other VMs, already use). Otherwise each vCPU
//! goes to the CPU with the fewest vCPUs of the same VM, then the least total weight of
//! vCPUs placed there, then the lowest index: a VM is spread over distinct CPUs while it has
//! fewer vCPUs than the machine has CPUs, onto the least loaded ones. On an empty machine this
//! gives each VM the lowest free CPUs, as the exclusive placement before sharing did.
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;

/// The load of every physical CPU: the vCPUs placed there and their total weight.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CpuLoad {
    weight: Vec<u64>,
    vcpus: Vec<usize>,
}

/// Why a VM's vCPUs cannot be placed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PlacementError {
    /// `physical_cpus` names a CPU the machine does not have.
    CpuOutOfRange { cpu: usize, machine_cpus: usize },
    /// The machine has no CPU to run vCPUs on.
    NoCpus,
}

impl CpuLoad {
    /// A machine of `cpus` physical CPUs with nothing placed.
    pub fn new(cpus: usize) -> Self {
        CpuLoad {
            weight: vec![0; cpus],
            vcpus: vec![0; cpus],
        }
    }

    pub fn cpus(&self) -> usize {
        self.weight.len()
    }

    /// Total weight of the vCPUs placed on `cpu`.
    pub fn weight_on(&self, cpu: usize) -> u64 {
        self.weight.get(cpu).copied().unwrap_or(0)
    }

    /// Number of vCPUs placed on `cpu`.
    pub fn vcpus_on(&self, cpu: usize) -> usize {
        self.vcpus.get(cpu).copied().unwrap_or(0)
    }

    /// Where the `vcpus` vCPUs of a VM of weight `weight` would go (vCPU i on element i),
    /// without placing them.
    pub fn plan(
        &self,
        vcpus: usize,
        weight: u32,
        pinned: Option<&[usize]>,
    ) -> Result<Vec<usize>, PlacementError> {
        let machine_cpus = self.cpus();
        if let Some(list) = pinned {
            if let Some(&cpu) = list.iter().find(|&&c| c >= machine_cpus) {
                return Err(PlacementError::CpuOutOfRange { cpu, machine_cpus });
            }
            return Ok(list.to_vec());
        }
        if machine_cpus == 0 {
            return Err(PlacementError::NoCpus);
        }
        let mut load = self.weight.clone();
        let mut own = vec![0usize; machine_cpus];
        let mut out = Vec::with_capacity(vcpus);
        for _ in 0..vcpus {
            let cpu = (0..machine_cpus)
                .min_by_key(|&c| (own[c], load[c], c))
                .unwrap_or(0);
            own[cpu] += 1;
            load[cpu] = load[cpu].saturating_add(u64::from(weight));
            out.push(cpu);
        }
        Ok(out)
    }

    /// Records vCPUs of weight `weight` placed on `cpus` (CPUs out of range are ignored).
    pub fn commit(&mut self, cpus: &[usize], weight: u32) {
        for &c in cpus {
            if let (Some(w), Some(n)) = (self.weight.get_mut(c), self.vcpus.get_mut(c)) {
                *w = w.saturating_add(u64::from(weight));
                *n += 1;
            }
        }
    }

    /// Forgets vCPUs of weight `weight` placed on `cpus` (their VM ended).
    pub fn release(&mut self, cpus: &[usize], weight: u32) {
        for &c in cpus {
            if let (Some(w), Some(n)) = (self.weight.get_mut(c), self.vcpus.get_mut(c)) {
                *w = w.saturating_sub(u64::from(weight));
                *n = n.saturating_sub(1);
            }
        }
    }

    /// [`CpuLoad::plan`] then [`CpuLoad::commit`].
    pub fn place(
        &mut self,
        vcpus: usize,
        weight: u32,
        pinned: Option<&[usize]>,
    ) -> Result<Vec<usize>, PlacementError> {
        let cpus = self.plan(vcpus, weight, pinned)?;
        self.commit(&cpus, weight);
        Ok(cpus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_empty_machine_gives_each_vm_the_lowest_free_cpus() {
        let mut l = CpuLoad::new(4);
        assert_eq!(l.place(2, 256, None), Ok(vec![0, 1]));
        assert_eq!(l.place(1, 256, None), Ok(vec![2]));
        assert_eq!(l.place(1, 256, None), Ok(vec![3]));
        assert_eq!((l.weight_on(3), l.vcpus_on(3)), (256, 1));
    }

    #[test]
    fn new_vcpus_go_to_the_least_loaded_cpus_by_weight() {
        let mut l = CpuLoad::new(3);
        l.commit(&[0], 1024);
        l.commit(&[1], 256);
        l.commit(&[1], 256);
        // Loads 1024, 512, 0: the 2-vCPU VM takes CPUs 2 and 1, each vCPU on its own CPU.
        assert_eq!(l.place(2, 256, None), Ok(vec![2, 1]));
        // Now 1024, 768, 256: a heavy VM still avoids CPU 0.
        assert_eq!(l.place(1, 4096, None), Ok(vec![2]));
    }

    #[test]
    fn a_vm_with_more_vcpus_than_cpus_shares_them_evenly() {
        let l = CpuLoad::new(2);
        assert_eq!(l.plan(4, 256, None), Ok(vec![0, 1, 0, 1]));
        assert_eq!(l.plan(5, 256, None), Ok(vec![0, 1, 0, 1, 0]));
    }

    #[test]
    fn pins_are_kept_even_on_loaded_cpus_and_checked_against_the_machine() {
        let mut l = CpuLoad::new(2);
        l.commit(&[0], 256);
        assert_eq!(l.place(2, 256, Some(&[0, 0])), Ok(vec![0, 0]));
        assert_eq!((l.weight_on(0), l.vcpus_on(0)), (768, 3));
        assert_eq!(
            l.plan(1, 256, Some(&[2])),
            Err(PlacementError::CpuOutOfRange {
                cpu: 2,
                machine_cpus: 2
            })
        );
        assert_eq!(
            CpuLoad::new(0).plan(1, 256, None),
            Err(PlacementError::NoCpus)
        );
    }

    #[test]
    fn release_gives_the_load_back() {
        let mut l = CpuLoad::new(2);
        let a = l.place(2, 300, None).unwrap();
        let b = l.place(3, 100, None).unwrap();
        l.release(&a, 300);
        l.release(&b, 100);
        assert_eq!(l, CpuLoad::new(2));
    }

    proptest! {
        /// Unpinned placement keeps the machine balanced: after placing VMs of equal weight,
        /// CPU vCPU counts differ by at most one.
        #[test]
        fn equal_weight_vms_end_up_balanced(
            cpus in 1usize..6,
            vms in proptest::collection::vec(1usize..8, 0..10),
        ) {
            let mut l = CpuLoad::new(cpus);
            for &n in &vms {
                let placed = l.place(n, 256, None).unwrap();
                prop_assert_eq!(placed.len(), n);
                prop_assert!(placed.iter().all(|&c| c < cpus));
                // A VM uses distinct CPUs while it has no more vCPUs than the machine has CPUs.
                let mut distinct = placed.clone();
                distinct.sort_unstable();
                distinct.dedup();
                prop_assert_eq!(distinct.len(), n.min(cpus));
            }
            let counts: Vec<usize> = (0..cpus).map(|c| l.vcpus_on(c)).collect();
            let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            prop_assert!(hi - lo <= 1, "{counts:?}");
            prop_assert_eq!(counts.iter().sum::<usize>(), vms.iter().sum::<usize>());
        }
    }
}
