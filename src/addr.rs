//! Typed addresses. The hypervisor deals with three address spaces that must never be mixed:
//! host physical addresses ([`PhysAddr`]), guest intermediate physical addresses ([`Ipa`]) and
//! hypervisor virtual addresses ([`HvVirtAddr`]). Each is a distinct newtype, so passing an IPA
//! where a physical address is expected does not compile.
//!
//! The hypervisor identity-maps the RAM it manages, so `HvVirtAddr::from_phys` is a plain
//! conversion; it still exists so that the one place that relies on the identity map is named.
#![forbid(unsafe_code)]

use core::fmt;
use core::ops::{Add, Sub};

/// Size of a translation granule (4 KiB) and its shift.
pub const PAGE_SHIFT: u32 = 12;
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Sizes of the block mappings a 4 KiB granule offers at levels 2 and 1.
pub const SZ_2M: u64 = 2 << 20;
pub const SZ_1G: u64 = 1 << 30;

macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident, $short:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            pub const fn new(value: u64) -> Self {
                Self(value)
            }
            pub const fn as_u64(self) -> u64 {
                self.0
            }
            /// Rounds down to a multiple of `align` (a power of two).
            pub const fn align_down(self, align: u64) -> Self {
                Self(self.0 & !(align - 1))
            }
            /// Rounds up to a multiple of `align` (a power of two); `None` on overflow.
            pub const fn checked_align_up(self, align: u64) -> Option<Self> {
                match self.0.checked_add(align - 1) {
                    Some(v) => Some(Self(v & !(align - 1))),
                    None => None,
                }
            }
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }
            /// Offset of this address within an `align`-sized block.
            pub const fn offset_in(self, align: u64) -> u64 {
                self.0 & (align - 1)
            }
            pub const fn checked_add(self, bytes: u64) -> Option<Self> {
                match self.0.checked_add(bytes) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
        }

        impl Add<u64> for $name {
            type Output = Self;
            fn add(self, rhs: u64) -> Self {
                Self(self.0 + rhs)
            }
        }

        impl Sub<u64> for $name {
            type Output = Self;
            fn sub(self, rhs: u64) -> Self {
                Self(self.0 - rhs)
            }
        }

        /// Distance in bytes between two addresses of the same space.
        impl Sub<$name> for $name {
            type Output = u64;
            fn sub(self, rhs: $name) -> u64 {
                self.0 - rhs.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($short, ":{:#x}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

address_type!(
    /// A host physical address.
    PhysAddr,
    "pa"
);
address_type!(
    /// A guest intermediate physical address (the input of stage-2 translation).
    Ipa,
    "ipa"
);
address_type!(
    /// A hypervisor (EL2 stage-1) virtual address.
    HvVirtAddr,
    "va"
);

impl HvVirtAddr {
    /// The hypervisor virtual address of a physical address. EL2 identity-maps all the RAM it
    /// manages and the device regions it uses, so this is the same number.
    pub const fn from_phys(pa: PhysAddr) -> Self {
        Self(pa.0)
    }
}

/// A half-open range `[start, start + size)` of one address space.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Range<A> {
    pub start: A,
    pub size: u64,
}

impl<A> Range<A> {
    pub const fn new(start: A, size: u64) -> Self {
        Self { start, size }
    }
}

macro_rules! range_impl {
    ($name:ident) => {
        impl Range<$name> {
            /// The first address after the range, saturating at the top of the address space.
            pub const fn end(&self) -> $name {
                $name(self.start.0.saturating_add(self.size))
            }
            pub const fn contains(&self, a: $name) -> bool {
                a.0 >= self.start.0 && a.0 - self.start.0 < self.size
            }
            /// True when `[a, a + len)` lies wholly inside this range.
            pub const fn contains_range(&self, a: $name, len: u64) -> bool {
                a.0 >= self.start.0 && len <= self.size && a.0 - self.start.0 <= self.size - len
            }
            pub const fn overlaps(&self, other: &Self) -> bool {
                self.size != 0
                    && other.size != 0
                    && self.start.0 < other.start.0.saturating_add(other.size)
                    && other.start.0 < self.start.0.saturating_add(self.size)
            }
        }
    };
}
range_impl!(PhysAddr);
range_impl!(Ipa);
range_impl!(HvVirtAddr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_helpers() {
        let a = PhysAddr::new(0x4020_1234);
        assert_eq!(a.align_down(SZ_2M), PhysAddr::new(0x4020_0000));
        assert_eq!(a.checked_align_up(SZ_2M), Some(PhysAddr::new(0x4040_0000)));
        assert_eq!(a.offset_in(PAGE_SIZE), 0x234);
        assert!(!a.is_aligned(PAGE_SIZE));
        assert_eq!(PhysAddr::new(u64::MAX).checked_align_up(PAGE_SIZE), None);
    }

    #[test]
    fn ranges_contain_and_overlap() {
        let r = Range::new(Ipa::new(0x1000), 0x2000);
        assert!(r.contains(Ipa::new(0x1000)));
        assert!(r.contains(Ipa::new(0x2fff)));
        assert!(!r.contains(Ipa::new(0x3000)));
        assert!(r.contains_range(Ipa::new(0x2000), 0x1000));
        assert!(!r.contains_range(Ipa::new(0x2000), 0x1001));
        assert!(!r.contains_range(Ipa::new(0x0), 0x1000));
        assert!(r.overlaps(&Range::new(Ipa::new(0x2fff), 1)));
        assert!(!r.overlaps(&Range::new(Ipa::new(0x3000), 1)));
        assert!(!r.overlaps(&Range::new(Ipa::new(0x1000), 0)));
    }
}
