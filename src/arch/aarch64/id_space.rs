//! The hardware's ID register group 3 (op0 = 3, op1 = 0, CRn = 0, CRm = 1..7), read at EL2 for
//! the guest's trapped reads (HCR_EL2.TID3); `trap::idregs` decides what the guest sees.

/// Reads ID-space register `i` (index as in `trap::idregs::index`: (CRm - 1) * 8 + op2) on
/// this CPU; 0 for `i` outside the space. Unallocated encodings in the space are RAZ (Arm ARM
/// D24.2, "reserved ID registers").
pub fn read(i: usize) -> u64 {
    macro_rules! mrs_table {
        ($($i:literal => $enc:literal,)*) => {
            match i {
                $( $i => {
                    let v: u64;
                    // SAFETY: reading an ID register has no side effect.
                    unsafe { core::arch::asm!(concat!("mrs {}, ", $enc), out(reg) v, options(nomem, nostack)) };
                    v
                } )*
                _ => 0,
            }
        };
    }
    mrs_table! {
        0 => "s3_0_c0_c1_0",
        1 => "s3_0_c0_c1_1",
        2 => "s3_0_c0_c1_2",
        3 => "s3_0_c0_c1_3",
        4 => "s3_0_c0_c1_4",
        5 => "s3_0_c0_c1_5",
        6 => "s3_0_c0_c1_6",
        7 => "s3_0_c0_c1_7",
        8 => "s3_0_c0_c2_0",
        9 => "s3_0_c0_c2_1",
        10 => "s3_0_c0_c2_2",
        11 => "s3_0_c0_c2_3",
        12 => "s3_0_c0_c2_4",
        13 => "s3_0_c0_c2_5",
        14 => "s3_0_c0_c2_6",
        15 => "s3_0_c0_c2_7",
        16 => "s3_0_c0_c3_0",
        17 => "s3_0_c0_c3_1",
        18 => "s3_0_c0_c3_2",
        19 => "s3_0_c0_c3_3",
        20 => "s3_0_c0_c3_4",
        21 => "s3_0_c0_c3_5",
        22 => "s3_0_c0_c3_6",
        23 => "s3_0_c0_c3_7",
        24 => "s3_0_c0_c4_0",
        25 => "s3_0_c0_c4_1",
        26 => "s3_0_c0_c4_2",
        27 => "s3_0_c0_c4_3",
        28 => "s3_0_c0_c4_4",
        29 => "s3_0_c0_c4_5",
        30 => "s3_0_c0_c4_6",
        31 => "s3_0_c0_c4_7",
        32 => "s3_0_c0_c5_0",
        33 => "s3_0_c0_c5_1",
        34 => "s3_0_c0_c5_2",
        35 => "s3_0_c0_c5_3",
        36 => "s3_0_c0_c5_4",
        37 => "s3_0_c0_c5_5",
        38 => "s3_0_c0_c5_6",
        39 => "s3_0_c0_c5_7",
        40 => "s3_0_c0_c6_0",
        41 => "s3_0_c0_c6_1",
        42 => "s3_0_c0_c6_2",
        43 => "s3_0_c0_c6_3",
        44 => "s3_0_c0_c6_4",
        45 => "s3_0_c0_c6_5",
        46 => "s3_0_c0_c6_6",
        47 => "s3_0_c0_c6_7",
        48 => "s3_0_c0_c7_0",
        49 => "s3_0_c0_c7_1",
        50 => "s3_0_c0_c7_2",
        51 => "s3_0_c0_c7_3",
        52 => "s3_0_c0_c7_4",
        53 => "s3_0_c0_c7_5",
        54 => "s3_0_c0_c7_6",
        55 => "s3_0_c0_c7_7",
    }
}
