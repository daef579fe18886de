//! The machine's VM count and the one decision taken from it: when the last VM ends, the
//! machine powers off.
//!
//! A VM counts from the moment it is started until its end has been handled. A VM that ends
//! with a restart starts its successor *before* its own end is counted, so the count never
//! touches zero in between; a restart that fails starts nothing, and the end then counts like
//! any other (the machine powers off if that was the last VM, rather than idling forever with
//! nothing to run).
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicUsize, Ordering};

/// The number of live VMs.
pub struct LiveVms(AtomicUsize);

impl LiveVms {
    pub const fn new() -> Self {
        LiveVms(AtomicUsize::new(0))
    }

    /// A VM was started.
    pub fn started(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// A VM's end has been handled, including starting its successor (counted by [`started`]
    /// first) when it restarts. True when no VM is left: the machine powers off.
    ///
    /// [`started`]: LiveVms::started
    pub fn ended(&self) -> bool {
        self.0.fetch_sub(1, Ordering::SeqCst) == 1
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Default for LiveVms {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_vm_to_end_powers_the_machine_off() {
        let vms = LiveVms::new();
        vms.started();
        vms.started();
        assert!(!vms.ended());
        assert!(vms.ended());
        assert_eq!(vms.count(), 0);
    }

    #[test]
    fn a_restarted_vm_keeps_the_machine_on() {
        let vms = LiveVms::new();
        vms.started();
        // SYSTEM_RESET with on_reset = "restart": the successor starts, then the end counts.
        vms.started();
        assert!(!vms.ended());
        assert_eq!(vms.count(), 1);
    }

    #[test]
    fn a_failed_restart_of_the_last_vm_powers_the_machine_off() {
        let vms = LiveVms::new();
        vms.started();
        // The restart failed: no successor was started. The machine must not idle forever.
        assert!(vms.ended());
    }
}
