//! gzip (RFC 1952) decoding for the ramdisk and for compressed kernels: header parsing,
//! inflation with `miniz_oxide` (RFC 1951 DEFLATE), and the CRC-32 / ISIZE trailer check.
//!
//! A gzip file is a series of members (RFC 1952 section 2.2); each member is:
//!
//! ```text
//! +---+---+---+---+---+---+---+---+---+---+
//! |ID1|ID2|CM |FLG|     MTIME     |XFL|OS |   ID1 ID2 = 1f 8b, CM = 8 (deflate)
//! +---+---+---+---+---+---+---+---+---+---+
//! (FEXTRA) XLEN (2 bytes LE), XLEN bytes
//! (FNAME) zero-terminated file name
//! (FCOMMENT) zero-terminated comment
//! (FHCRC) CRC16: the low 16 bits of the CRC-32 of the header bytes before it
//! compressed blocks (DEFLATE)
//! CRC32 (4 bytes LE) of the uncompressed data, ISIZE (4 bytes LE) = its size mod 2^32
//! ```
//!
//! `decompress` inflates every member and concatenates the output. After the last member only
//! zero bytes may follow (the padding a loader may add); anything else is an error, so a
//! corrupted file is never half-accepted.
//!
//! CRC-32: `miniz_oxide` only computes Adler-32 (the zlib checksum), so this module carries a
//! small table-driven CRC-32 (the IEEE 802.3 polynomial, reflected, as RFC 1952 section 8
//! specifies), with the table built at compile time.
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress as inflate, inflate_flags};

/// The two magic bytes that start every gzip member.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// CM = 8: the only compression method RFC 1952 defines (deflate).
const CM_DEFLATE: u8 = 8;
/// Length of the fixed part of a member header and of the trailer.
const FIXED_HEADER_LEN: usize = 10;
const TRAILER_LEN: usize = 8;

/// FLG bits (RFC 1952 section 2.3.1).
pub mod flags {
    pub const FTEXT: u8 = 1 << 0;
    pub const FHCRC: u8 = 1 << 1;
    pub const FEXTRA: u8 = 1 << 2;
    pub const FNAME: u8 = 1 << 3;
    pub const FCOMMENT: u8 = 1 << 4;
    /// Bits 5-7 are reserved and must be zero.
    pub const RESERVED: u8 = 0b1110_0000;
}

/// Why a gzip stream cannot be decoded. Offsets are from the start of the whole input.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum GzipError {
    /// The input does not start with 1f 8b.
    NotGzip,
    /// The header ends early (in the fixed part, FEXTRA, FNAME, FCOMMENT or FHCRC).
    TruncatedHeader { offset: usize },
    /// CM is not 8 (deflate).
    UnsupportedMethod { offset: usize, method: u8 },
    /// A reserved FLG bit is set.
    ReservedFlags { offset: usize, flags: u8 },
    /// The FHCRC header checksum does not match.
    HeaderCrcMismatch {
        offset: usize,
        expected: u16,
        actual: u16,
    },
    /// The DEFLATE data is invalid.
    CorruptData { offset: usize },
    /// The DEFLATE data ends before its final block.
    TruncatedData { offset: usize },
    /// The 8-byte trailer is missing or cut.
    TruncatedTrailer { offset: usize },
    /// The output would exceed the caller's limit.
    OutputTooLarge { limit: usize },
    /// No memory for the output buffer (`bytes` were asked for).
    OutOfMemory { bytes: usize },
    /// The CRC-32 of the output does not match the trailer.
    CrcMismatch {
        offset: usize,
        expected: u32,
        actual: u32,
    },
    /// ISIZE does not match the output size mod 2^32.
    SizeMismatch {
        offset: usize,
        expected: u32,
        actual: u32,
    },
    /// Non-zero bytes that are not a gzip member follow the last member.
    TrailingGarbage { offset: usize },
}

impl fmt::Display for GzipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GzipError::NotGzip => write!(f, "gzip: no 1f 8b magic"),
            GzipError::TruncatedHeader { offset } => {
                write!(f, "gzip: member header at {offset:#x} is truncated")
            }
            GzipError::UnsupportedMethod { offset, method } => {
                write!(
                    f,
                    "gzip: member at {offset:#x} uses method {method}, not deflate (8)"
                )
            }
            GzipError::ReservedFlags { offset, flags } => {
                write!(
                    f,
                    "gzip: member at {offset:#x} sets reserved flags {flags:#04x}"
                )
            }
            GzipError::HeaderCrcMismatch {
                offset,
                expected,
                actual,
            } => write!(
                f,
                "gzip: header CRC of member at {offset:#x} is {actual:#06x}, FHCRC says \
                 {expected:#06x}"
            ),
            GzipError::CorruptData { offset } => {
                write!(f, "gzip: corrupt deflate data in member at {offset:#x}")
            }
            GzipError::TruncatedData { offset } => {
                write!(
                    f,
                    "gzip: deflate data of member at {offset:#x} is truncated"
                )
            }
            GzipError::TruncatedTrailer { offset } => {
                write!(f, "gzip: CRC32/ISIZE trailer at {offset:#x} is truncated")
            }
            GzipError::OutputTooLarge { limit } => {
                write!(f, "gzip: output exceeds the limit of {limit} bytes")
            }
            GzipError::OutOfMemory { bytes } => {
                write!(f, "gzip: no memory for {bytes} bytes of output")
            }
            GzipError::CrcMismatch {
                offset,
                expected,
                actual,
            } => write!(
                f,
                "gzip: data CRC32 is {actual:#010x}, trailer at {offset:#x} says {expected:#010x}"
            ),
            GzipError::SizeMismatch {
                offset,
                expected,
                actual,
            } => write!(
                f,
                "gzip: data size mod 2^32 is {actual}, trailer at {offset:#x} says {expected}"
            ),
            GzipError::TrailingGarbage { offset } => {
                write!(
                    f,
                    "gzip: unexpected bytes at {offset:#x} after the last member"
                )
            }
        }
    }
}

/// The parsed header of one member. Slices borrow the input.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GzipHeader<'a> {
    pub flags: u8,
    pub mtime: u32,
    pub extra_flags: u8,
    pub os: u8,
    pub extra: Option<&'a [u8]>,
    /// The original file name, without its NUL (ISO 8859-1 per the RFC).
    pub name: Option<&'a [u8]>,
    pub comment: Option<&'a [u8]>,
    /// Length of the header in bytes: the DEFLATE data starts here.
    pub len: usize,
}

/// True if `data` starts with the gzip magic.
pub fn is_gzip(data: &[u8]) -> bool {
    data.starts_with(&GZIP_MAGIC)
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) as gzip uses it (RFC 1952 section 8).
#[derive(Clone, Copy, Debug)]
pub struct Crc32(u32);

const CRC32_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

impl Crc32 {
    pub const fn new() -> Self {
        Self(0xffff_ffff)
    }
    pub fn update(&mut self, data: &[u8]) {
        let mut c = self.0;
        for &b in data {
            c = CRC32_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }
    pub const fn finish(self) -> u32 {
        self.0 ^ 0xffff_ffff
    }
}

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

/// The CRC-32 of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(data);
    c.finish()
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Parses the member header at the start of `data`.
pub fn parse_header(data: &[u8]) -> Result<GzipHeader<'_>, GzipError> {
    parse_header_at(data, 0)
}

/// Parses a member header starting at `base` (used for error offsets only).
fn parse_header_at(input: &[u8], base: usize) -> Result<GzipHeader<'_>, GzipError> {
    let data = &input[base..];
    let truncated = GzipError::TruncatedHeader { offset: base };
    if !is_gzip(data) {
        return Err(if data.len() < 2 {
            truncated
        } else {
            GzipError::NotGzip
        });
    }
    let fixed = data.get(..FIXED_HEADER_LEN).ok_or(truncated.clone())?;
    let method = fixed[2];
    if method != CM_DEFLATE {
        return Err(GzipError::UnsupportedMethod {
            offset: base,
            method,
        });
    }
    let flg = fixed[3];
    if flg & flags::RESERVED != 0 {
        return Err(GzipError::ReservedFlags {
            offset: base,
            flags: flg,
        });
    }
    let mtime = le32(fixed, 4).ok_or(truncated.clone())?;
    let mut pos = FIXED_HEADER_LEN;

    let mut extra = None;
    if flg & flags::FEXTRA != 0 {
        let xlen = data.get(pos..pos + 2).ok_or(truncated.clone())?;
        let xlen = usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
        pos += 2;
        extra = Some(data.get(pos..pos + xlen).ok_or(truncated.clone())?);
        pos += xlen;
    }
    let zero_terminated = |pos: &mut usize| -> Result<&[u8], GzipError> {
        let rest = data.get(*pos..).ok_or(truncated.clone())?;
        let n = rest.iter().position(|&b| b == 0).ok_or(truncated.clone())?;
        let s = &rest[..n];
        *pos += n + 1;
        Ok(s)
    };
    let name = if flg & flags::FNAME != 0 {
        Some(zero_terminated(&mut pos)?)
    } else {
        None
    };
    let comment = if flg & flags::FCOMMENT != 0 {
        Some(zero_terminated(&mut pos)?)
    } else {
        None
    };
    if flg & flags::FHCRC != 0 {
        let stored = data.get(pos..pos + 2).ok_or(truncated.clone())?;
        let expected = u16::from_le_bytes([stored[0], stored[1]]);
        let actual = (crc32(&data[..pos]) & 0xffff) as u16;
        if actual != expected {
            return Err(GzipError::HeaderCrcMismatch {
                offset: base,
                expected,
                actual,
            });
        }
        pos += 2;
    }
    Ok(GzipHeader {
        flags: flg,
        mtime,
        extra_flags: fixed[8],
        os: fixed[9],
        extra,
        name,
        comment,
        len: pos,
    })
}

/// Resizes `out` to `len` zeroed bytes, failing instead of aborting when memory runs out.
fn grow(out: &mut Vec<u8>, len: usize) -> Result<(), GzipError> {
    if len > out.len() {
        out.try_reserve_exact(len - out.len())
            .map_err(|_| GzipError::OutOfMemory { bytes: len })?;
    }
    out.resize(len, 0);
    Ok(())
}

/// Inflates one member's DEFLATE data starting at `start`, appending to `out` (never past
/// `limit` bytes in total). Returns the offset just after the DEFLATE data.
fn inflate_member(
    input: &[u8],
    start: usize,
    member: usize,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<usize, GzipError> {
    // The decompressor state is ~11 KiB: keep it off the (small) hypervisor stack.
    let mut state = Box::<DecompressorOxide>::default();
    // The whole input is in memory and `out` always holds the whole output so far, so the
    // decompressor can look back into it directly.
    let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let mut in_pos = start;
    let mut out_pos = out.len();
    // First guess of the output size: ISIZE of the last member if this is the only one. The
    // trailer is untrusted (it may be garbage): the guess is capped at 8 times the input, and
    // the buffer grows by doubling from there, each step checked against the allocator.
    let hint = le32(input, input.len().saturating_sub(4)).map_or(0, |v| v as usize);
    let cap = input.len().saturating_mul(8).max(4096);
    let want = out_pos
        .saturating_add(hint.min(cap).max(input.len() - start).max(4096))
        .min(limit);
    grow(out, want.max(out_pos))?;
    loop {
        let (status, consumed, produced) =
            inflate(&mut state, &input[in_pos..], out, out_pos, flags);
        in_pos += consumed;
        out_pos += produced;
        match status {
            TINFLStatus::Done => {
                out.truncate(out_pos);
                return Ok(in_pos);
            }
            TINFLStatus::HasMoreOutput => {
                if out.len() >= limit {
                    out.truncate(out_pos);
                    return Err(GzipError::OutputTooLarge { limit });
                }
                let grown = out.len().saturating_mul(2).max(4096).min(limit);
                if let Err(e) = grow(out, grown) {
                    out.truncate(out_pos);
                    return Err(e);
                }
            }
            TINFLStatus::NeedsMoreInput | TINFLStatus::FailedCannotMakeProgress => {
                out.truncate(out_pos);
                return Err(GzipError::TruncatedData { offset: member });
            }
            _ => {
                out.truncate(out_pos);
                return Err(GzipError::CorruptData { offset: member });
            }
        }
    }
}

/// Decompresses a whole gzip file (one or more members) into a new buffer of at most `limit`
/// bytes, checking every member's CRC-32 and ISIZE.
pub fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, GzipError> {
    if !is_gzip(input) {
        return Err(GzipError::NotGzip);
    }
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let header = parse_header_at(input, pos)?;
        let member_out_start = out.len();
        let deflate_end = inflate_member(input, pos + header.len, pos, &mut out, limit)?;
        let trailer = input.get(deflate_end..deflate_end + TRAILER_LEN).ok_or(
            GzipError::TruncatedTrailer {
                offset: deflate_end,
            },
        )?;
        let expected_crc = le32(trailer, 0).ok_or(GzipError::TruncatedTrailer { offset: pos })?;
        let expected_size = le32(trailer, 4).ok_or(GzipError::TruncatedTrailer { offset: pos })?;
        let produced = &out[member_out_start..];
        let actual_crc = crc32(produced);
        if actual_crc != expected_crc {
            return Err(GzipError::CrcMismatch {
                offset: deflate_end,
                expected: expected_crc,
                actual: actual_crc,
            });
        }
        // ISIZE is the size modulo 2^32 (RFC 1952 section 2.3.1).
        let actual_size = produced.len() as u32;
        if actual_size != expected_size {
            return Err(GzipError::SizeMismatch {
                offset: deflate_end + 4,
                expected: expected_size,
                actual: actual_size,
            });
        }
        pos = deflate_end + TRAILER_LEN;
        let rest = &input[pos..];
        if is_gzip(rest) {
            continue;
        }
        return match rest.iter().position(|&b| b != 0) {
            None => Ok(out),
            Some(i) => Err(GzipError::TrailingGarbage { offset: pos + i }),
        };
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A one-member gzip file of `data` (miniz_oxide's deflate, RFC 1952 framing).
    pub(crate) fn compress(data: &[u8]) -> Vec<u8> {
        let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
        out.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(data, 6));
        out.extend_from_slice(&crc32(data).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    const PLAIN: &[u8] = include_bytes!("../../tests/fixtures/guest/gzip-plain.txt");
    /// `gzip -9 -n`: no name, no mtime.
    const GZ: &[u8] = include_bytes!("../../tests/fixtures/guest/gzip-plain.txt.gz");
    /// `gzip -9`: with FNAME.
    const GZ_NAMED: &[u8] = include_bytes!("../../tests/fixtures/guest/gzip-named.txt.gz");

    #[test]
    fn crc32_matches_the_standard_check_value() {
        // The CRC-32 check value of "123456789" (RFC 1952's CRC, also zlib's crc32).
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
        let mut c = Crc32::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.finish(), 0xcbf4_3926);
    }

    #[test]
    fn detects_the_magic() {
        assert!(is_gzip(GZ));
        assert!(!is_gzip(b"070701"));
        assert!(!is_gzip(&[0x1f]));
    }

    #[test]
    fn decompresses_a_file_made_by_gzip() {
        assert_eq!(decompress(GZ, 1 << 20).unwrap(), PLAIN);
    }

    #[test]
    fn parses_the_file_name_of_a_named_member() {
        let h = parse_header(GZ_NAMED).unwrap();
        assert_eq!(h.name, Some(&b"gzip-plain.txt"[..]));
        assert_eq!(h.flags & flags::FNAME, flags::FNAME);
        assert_eq!(h.len, 10 + b"gzip-plain.txt\0".len());
        assert_eq!(
            h.extra_flags, 2,
            "XFL = 2 for gzip -9 (maximum compression)"
        );
        assert_eq!(decompress(GZ_NAMED, 1 << 20).unwrap(), PLAIN);
        let h = parse_header(GZ).unwrap();
        assert_eq!((h.name, h.mtime, h.len), (None, 0, 10));
    }

    /// A member with every optional header field, built by hand around the deflate data of
    /// the fixture.
    fn member_with_all_fields(bad_hcrc: bool) -> Vec<u8> {
        let plain = parse_header(GZ).unwrap();
        let mut m = vec![
            0x1f,
            0x8b,
            8,
            flags::FEXTRA | flags::FNAME | flags::FCOMMENT | flags::FHCRC,
        ];
        m.extend_from_slice(&0x1234_5678u32.to_le_bytes());
        m.extend_from_slice(&[0, 3]);
        m.extend_from_slice(&4u16.to_le_bytes());
        m.extend_from_slice(b"AB\0\0");
        m.extend_from_slice(b"name\0");
        m.extend_from_slice(b"a comment\0");
        let hcrc = (crc32(&m) & 0xffff) as u16 ^ u16::from(bad_hcrc);
        m.extend_from_slice(&hcrc.to_le_bytes());
        m.extend_from_slice(&GZ[plain.len..]);
        m
    }

    #[test]
    fn parses_fextra_fname_fcomment_and_checks_fhcrc() {
        let m = member_with_all_fields(false);
        let h = parse_header(&m).unwrap();
        assert_eq!(h.extra, Some(&b"AB\0\0"[..]));
        assert_eq!(h.name, Some(&b"name"[..]));
        assert_eq!(h.comment, Some(&b"a comment"[..]));
        assert_eq!(h.mtime, 0x1234_5678);
        assert_eq!(h.os, 3);
        assert_eq!(h.len, 10 + 2 + 4 + 5 + 10 + 2);
        assert_eq!(decompress(&m, 1 << 20).unwrap(), PLAIN);

        let bad = member_with_all_fields(true);
        assert!(matches!(
            parse_header(&bad),
            Err(GzipError::HeaderCrcMismatch { offset: 0, .. })
        ));
    }

    #[test]
    fn rejects_a_header_truncated_in_any_optional_field() {
        let m = member_with_all_fields(false);
        for cut in [1, 5, 10, 11, 13, 18, 25, 30] {
            assert_eq!(
                parse_header(&m[..cut]),
                Err(GzipError::TruncatedHeader { offset: 0 }),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn rejects_wrong_method_and_reserved_flags() {
        let mut m = GZ.to_vec();
        m[2] = 7;
        assert_eq!(
            decompress(&m, 1 << 20),
            Err(GzipError::UnsupportedMethod {
                offset: 0,
                method: 7
            })
        );
        let mut m = GZ.to_vec();
        m[3] = 0x20;
        assert_eq!(
            decompress(&m, 1 << 20),
            Err(GzipError::ReservedFlags {
                offset: 0,
                flags: 0x20
            })
        );
        assert_eq!(decompress(b"070701", 1 << 20), Err(GzipError::NotGzip));
    }

    #[test]
    fn rejects_a_corrupt_crc() {
        let mut m = GZ.to_vec();
        let at = m.len() - 8;
        m[at] ^= 0xff;
        let expected = le32(&m, at).unwrap();
        assert_eq!(
            decompress(&m, 1 << 20),
            Err(GzipError::CrcMismatch {
                offset: at,
                expected,
                actual: crc32(PLAIN)
            })
        );
    }

    #[test]
    fn rejects_a_wrong_isize() {
        let mut m = GZ.to_vec();
        let at = m.len() - 4;
        m[at] ^= 1;
        assert_eq!(
            decompress(&m, 1 << 20),
            Err(GzipError::SizeMismatch {
                offset: at,
                expected: PLAIN.len() as u32 ^ 1,
                actual: PLAIN.len() as u32
            })
        );
    }

    #[test]
    fn rejects_truncated_data_and_trailer() {
        assert_eq!(
            decompress(&GZ[..GZ.len() / 2], 1 << 20),
            Err(GzipError::TruncatedData { offset: 0 })
        );
        assert_eq!(
            decompress(&GZ[..GZ.len() - 3], 1 << 20),
            Err(GzipError::TruncatedTrailer {
                offset: GZ.len() - 8
            })
        );
        assert_eq!(
            decompress(&GZ[..7], 1 << 20),
            Err(GzipError::TruncatedHeader { offset: 0 })
        );
    }

    #[test]
    fn rejects_garbage_in_the_deflate_data() {
        let mut m = GZ.to_vec();
        // Make the first block's type the reserved BTYPE 11 (RFC 1951 section 3.2.3).
        m[10] |= 0b110;
        assert_eq!(
            decompress(&m, 1 << 20),
            Err(GzipError::CorruptData { offset: 0 })
        );
    }

    #[test]
    fn rejects_trailing_garbage_but_accepts_zero_padding() {
        let mut m = GZ.to_vec();
        m.extend_from_slice(&[0; 100]);
        assert_eq!(decompress(&m, 1 << 20).unwrap(), PLAIN);
        m.extend_from_slice(b"junk");
        assert_eq!(
            decompress(&m, 1 << 20),
            Err(GzipError::TrailingGarbage {
                offset: GZ.len() + 100
            })
        );
    }

    #[test]
    fn concatenates_multiple_members() {
        let mut m = GZ.to_vec();
        m.extend_from_slice(GZ_NAMED);
        let out = decompress(&m, 1 << 20).unwrap();
        assert_eq!(out.len(), 2 * PLAIN.len());
        assert_eq!(&out[..PLAIN.len()], PLAIN);
        assert_eq!(&out[PLAIN.len()..], PLAIN);
        // An error in the second member names its offset.
        let mut bad = m.clone();
        bad[GZ.len() + 2] = 9;
        assert_eq!(
            decompress(&bad, 1 << 20),
            Err(GzipError::UnsupportedMethod {
                offset: GZ.len(),
                method: 9
            })
        );
    }

    #[test]
    fn enforces_the_output_limit() {
        assert_eq!(
            decompress(GZ, PLAIN.len() - 1),
            Err(GzipError::OutputTooLarge {
                limit: PLAIN.len() - 1
            })
        );
        assert_eq!(decompress(GZ, PLAIN.len()).unwrap(), PLAIN);
        // A lying ISIZE hint does not make the buffer larger than the limit.
        let mut m = GZ.to_vec();
        let at = m.len() - 4;
        m[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decompress(&m, 100),
            Err(GzipError::OutputTooLarge { limit: 100 })
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics_on_arbitrary_bytes_after_the_magic(
                tail in proptest::collection::vec(any::<u8>(), 0..512)
            ) {
                let mut m = vec![0x1f, 0x8b, 8, 0];
                m.extend_from_slice(&tail);
                // Only the error kind matters; a valid stream here would be a coincidence.
                let r = decompress(&m, 4096);
                prop_assert!(r.is_err() || r.as_ref().is_ok_and(|v| v.len() <= 4096));
            }

            #[test]
            fn round_trips_what_deflate_compresses(
                data in proptest::collection::vec(0u8..4, 0..20_000)
            ) {
                prop_assert_eq!(decompress(&compress(&data), data.len()).unwrap(), data);
            }

            #[test]
            fn never_panics_on_a_mutated_fixture(at in 0usize..6482, v in any::<u8>(), cut in 0usize..7000) {
                let mut m = GZ.to_vec();
                let i = at % m.len();
                m[i] = v;
                let m = &m[..cut.min(m.len())];
                if let Ok(out) = decompress(m, 1 << 20) {
                    // Only possible if the mutation kept the data intact (CRC-checked).
                    prop_assert_eq!(out, PLAIN);
                }
            }
        }
    }
}
