//! Decoding of the exceptions a guest causes: the syndrome in ESR_EL2 (and the fault address
//! registers) turned into typed values the exit handler can match on, and the syndromes the
//! hypervisor writes into ESR_EL1 when it injects an exception into a guest; and which guest
//! accesses trap at all ([`cptr`]).
//!
//! Everything here works on *saved* register values handed in by the exit path; nothing reads
//! a live system register.
#![forbid(unsafe_code)]

pub mod cptr;
pub mod esr;
pub mod idregs;
