//! The arm64 Linux `Image` header (Linux `Documentation/arch/arm64/booting.rst`, section 4
//! "Call the kernel image"):
//!
//! ```text
//! offset  field         notes
//! 0       u32 code0     executable code (branch to stext; "MZ" when the EFI stub is built in)
//! 4       u32 code1
//! 8       u64 text_offset   image load offset from a 2 MiB aligned base, little endian
//! 16      u64 image_size    effective image size (file + BSS etc.), little endian
//! 24      u64 flags         see `IMAGE_FLAGS`
//! 32      u64 res2, res3, res4 (reserved)
//! 56      u32 magic = 0x644d5241 ("ARM\x64")
//! 60      u32 res5      offset of the PE header
//! ```
//!
//! Header notes from booting.rst this module applies: fields are little endian since v3.17;
//! where `image_size` is zero (kernels before v3.17) `text_offset` is assumed to be 0x80000 and
//! the kernel's memory footprint is unknown; where it is non-zero it "must be respected".
//!
//! An EFI zboot image (`CONFIG_EFI_ZBOOT`, `vmlinuz.efi`) is a PE/COFF file whose payload is a
//! compressed `Image`; its header (Linux `drivers/firmware/efi/libstub/zboot-header.S`) is
//! "MZ\0\0", "zimg", u32 payload offset, u32 payload size, 8 reserved bytes, and the
//! NUL-terminated compression type ("gzip", "zstd", ...) at offset 24. It is not an `Image`
//! and cannot be entered directly: [`parse`] rejects it and [`zboot_payload`] finds the
//! compressed `Image` inside it.
#![forbid(unsafe_code)]

use core::fmt;
use tock_registers::{LocalRegisterCopy, register_bitfields};

/// Size of the header.
pub const HEADER_LEN: usize = 64;
/// "ARM\x64", little endian, at offset 56.
pub const MAGIC: u32 = 0x644d_5241;
const MAGIC_OFFSET: usize = 56;
/// The load offset assumed when `image_size` is 0 (booting.rst, header notes).
pub const LEGACY_TEXT_OFFSET: u64 = 0x8_0000;
/// The kernel's base must be 2 MiB aligned; `text_offset` is an offset from that base, so it is
/// below 2 MiB. Since v5.8 it is 0; older kernels used 0x80000 or a random 4 KiB multiple.
const MAX_TEXT_OFFSET: u64 = 2 << 20;
const TEXT_OFFSET_ALIGN: u64 = 4096;

register_bitfields![u64,
    /// The `flags` field of the Image header (booting.rst, header notes).
    pub IMAGE_FLAGS [
        /// Bit 0: kernel endianness, 1 if big endian.
        BE OFFSET(0) NUMBITS(1) [],
        /// Bits 1-2: kernel page size.
        PAGE_SIZE OFFSET(1) NUMBITS(2) [
            Unspecified = 0,
            Size4K = 1,
            Size16K = 2,
            Size64K = 3
        ],
        /// Bit 3: physical placement. 0: the 2 MiB aligned base should be as close as possible
        /// to the base of DRAM; 1: it may be anywhere in physical memory.
        PHYS_PLACEMENT_ANYWHERE OFFSET(3) NUMBITS(1) [],
    ]
];

/// The kernel's page size, from flags bits 1-2.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PageSize {
    Unspecified,
    Size4K,
    Size16K,
    Size64K,
}

/// What the loader needs from a valid header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ImageInfo {
    /// Offset of the image from its 2 MiB aligned load base.
    pub text_offset: u64,
    /// Memory the kernel needs from its first byte (file + BSS + early data), at least the
    /// file length. For a legacy header (`image_size` 0) this is only the file length: see
    /// `legacy`.
    pub image_size: u64,
    /// Length of the file.
    pub file_size: u64,
    pub page_size: PageSize,
    /// Flags bit 3: the 2 MiB aligned base may be anywhere in RAM.
    pub place_anywhere: bool,
    /// `image_size` was 0 (pre-3.17 kernel): the footprint is unknown and the loader should
    /// leave as much memory as it can free after the image.
    pub legacy: bool,
}

/// Why a file is not a bootable arm64 `Image`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ImageError {
    /// Shorter than the 64-byte header.
    TooShort { len: usize },
    /// An EFI zboot image (compressed kernel in a PE wrapper); `compression` is its
    /// compression type ("gzip", "zstd", ...). It must be decompressed first: extract the
    /// payload (see [`zboot_payload`]) or use the plain `Image`.
    EfiZboot { compression: [u8; 8] },
    /// A gzip file (`Image.gz`): decompress it first.
    Gzip,
    /// No "ARM\x64" magic at offset 56.
    BadMagic { found: u32 },
    /// Flags bit 0: a big-endian kernel.
    BigEndian,
    /// `image_size` is smaller than the file.
    ImageSizeTooSmall { image_size: u64, file_size: u64 },
    /// `text_offset` is not a 4 KiB multiple below 2 MiB.
    BadTextOffset { text_offset: u64 },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::TooShort { len } => {
                write!(
                    f,
                    "kernel: {len} bytes is shorter than the 64-byte arm64 Image header"
                )
            }
            ImageError::EfiZboot { compression } => {
                let n = compression
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(compression.len());
                let name = core::str::from_utf8(&compression[..n]).unwrap_or("?");
                write!(
                    f,
                    "kernel: EFI zboot image ({name}-compressed vmlinuz.efi); it must be \
                     decompressed first: use the plain arm64 Image"
                )
            }
            ImageError::Gzip => {
                write!(
                    f,
                    "kernel: gzip-compressed (Image.gz); it must be decompressed first"
                )
            }
            ImageError::BadMagic { found } => write!(
                f,
                "kernel: not an arm64 Image (magic at offset 56 is {found:#010x}, want \
                 0x644d5241)"
            ),
            ImageError::BigEndian => write!(f, "kernel: big-endian kernels are not supported"),
            ImageError::ImageSizeTooSmall {
                image_size,
                file_size,
            } => write!(
                f,
                "kernel: header image_size {image_size:#x} is smaller than the file \
                 ({file_size:#x} bytes)"
            ),
            ImageError::BadTextOffset { text_offset } => write!(
                f,
                "kernel: text_offset {text_offset:#x} is not a 4 KiB multiple below 2 MiB"
            ),
        }
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// The EFI zboot header, if `data` starts with one: its compression type (NUL-padded) and
/// the compressed payload. `None` if it is not zboot or the payload lies outside the file.
pub fn zboot_payload(data: &[u8]) -> Option<([u8; 8], &[u8])> {
    if data.len() < 32 || &data[0..2] != b"MZ" || &data[4..8] != b"zimg" {
        return None;
    }
    let offset = le32(data, 8) as usize;
    let size = le32(data, 12) as usize;
    let mut compression = [0u8; 8];
    compression.copy_from_slice(&data[24..32]);
    let payload = data.get(offset..offset.checked_add(size)?)?;
    Some((compression, payload))
}

/// Validates the header of the `Image` in `data` (the whole file).
pub fn parse(data: &[u8]) -> Result<ImageInfo, ImageError> {
    if data.len() >= 8 && &data[0..2] == b"MZ" && &data[4..8] == b"zimg" {
        let mut compression = [0u8; 8];
        if let Some(c) = data.get(24..32) {
            compression.copy_from_slice(c);
        }
        return Err(ImageError::EfiZboot { compression });
    }
    if super::gzip::is_gzip(data) {
        return Err(ImageError::Gzip);
    }
    if data.len() < HEADER_LEN {
        return Err(ImageError::TooShort { len: data.len() });
    }
    let magic = le32(data, MAGIC_OFFSET);
    if magic != MAGIC {
        return Err(ImageError::BadMagic { found: magic });
    }
    let raw_text_offset = le64(data, 8);
    let raw_image_size = le64(data, 16);
    let flags = LocalRegisterCopy::<u64, IMAGE_FLAGS::Register>::new(le64(data, 24));
    let file_size = data.len() as u64;
    let legacy = raw_image_size == 0;
    // Pre-3.17 headers: flags were not defined and text_offset had the kernel's endianness;
    // booting.rst says to assume 0x80000.
    let (text_offset, image_size, page_size, place_anywhere) = if legacy {
        (LEGACY_TEXT_OFFSET, file_size, PageSize::Unspecified, false)
    } else {
        if flags.is_set(IMAGE_FLAGS::BE) {
            return Err(ImageError::BigEndian);
        }
        if raw_image_size < file_size {
            return Err(ImageError::ImageSizeTooSmall {
                image_size: raw_image_size,
                file_size,
            });
        }
        let page_size = match flags.read_as_enum(IMAGE_FLAGS::PAGE_SIZE) {
            Some(IMAGE_FLAGS::PAGE_SIZE::Value::Size4K) => PageSize::Size4K,
            Some(IMAGE_FLAGS::PAGE_SIZE::Value::Size16K) => PageSize::Size16K,
            Some(IMAGE_FLAGS::PAGE_SIZE::Value::Size64K) => PageSize::Size64K,
            _ => PageSize::Unspecified,
        };
        let anywhere = flags.is_set(IMAGE_FLAGS::PHYS_PLACEMENT_ANYWHERE);
        (raw_text_offset, raw_image_size, page_size, anywhere)
    };
    if text_offset >= MAX_TEXT_OFFSET || !text_offset.is_multiple_of(TEXT_OFFSET_ALIGN) {
        return Err(ImageError::BadTextOffset { text_offset });
    }
    Ok(ImageInfo {
        text_offset,
        image_size,
        file_size,
        page_size,
        place_anywhere,
        legacy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first 64 bytes of the Debian 12 cloud kernel (linux-image-6.1.0-*-cloud-arm64).
    const CLOUD_HEADER: &[u8; 64] =
        include_bytes!("../../tests/fixtures/guest/image-cloud-header.bin");

    fn header(text_offset: u64, image_size: u64, flags: u64) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[8..16].copy_from_slice(&text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&image_size.to_le_bytes());
        h[24..32].copy_from_slice(&flags.to_le_bytes());
        h[56..60].copy_from_slice(&MAGIC.to_le_bytes());
        h
    }

    #[test]
    fn parses_the_debian_cloud_kernel_header() {
        // The header alone is 64 bytes; image_size (0x1ab0000) covers it.
        let info = parse(CLOUD_HEADER).unwrap();
        assert_eq!(
            info,
            ImageInfo {
                text_offset: 0,
                image_size: 0x1ab_0000,
                file_size: 64,
                page_size: PageSize::Size4K,
                place_anywhere: true,
                legacy: false,
            }
        );
        // It starts with "MZ" (EFI stub) but is not zboot.
        assert_eq!(&CLOUD_HEADER[..2], b"MZ");
        assert_eq!(zboot_payload(CLOUD_HEADER), None);
    }

    #[test]
    fn decodes_page_size_and_placement_flags() {
        for (flags, page, anywhere) in [
            (0b0000, PageSize::Unspecified, false),
            (0b0010, PageSize::Size4K, false),
            (0b0100, PageSize::Size16K, false),
            (0b0110, PageSize::Size64K, false),
            (0b1110, PageSize::Size64K, true),
            (0b1000, PageSize::Unspecified, true),
        ] {
            let info = parse(&header(0, 4096, flags)).unwrap();
            assert_eq!(
                (info.page_size, info.place_anywhere),
                (page, anywhere),
                "{flags:#b}"
            );
        }
    }

    #[test]
    fn uses_the_legacy_defaults_when_image_size_is_zero() {
        let mut h = header(0x1234, 0, 0b1111);
        h.resize(1000, 0);
        let info = parse(&h).unwrap();
        assert_eq!(info.text_offset, LEGACY_TEXT_OFFSET);
        assert_eq!(info.image_size, 1000);
        assert!(info.legacy);
        assert!(!info.place_anywhere);
    }

    #[test]
    fn rejects_a_big_endian_kernel() {
        assert_eq!(parse(&header(0, 4096, 1)), Err(ImageError::BigEndian));
    }

    #[test]
    fn rejects_an_image_size_smaller_than_the_file() {
        let mut h = header(0, 100, 0);
        h.resize(101, 0);
        assert_eq!(
            parse(&h),
            Err(ImageError::ImageSizeTooSmall {
                image_size: 100,
                file_size: 101
            })
        );
    }

    #[test]
    fn rejects_an_insane_text_offset() {
        for t in [2 << 20, 0x8_0001, u64::MAX] {
            assert_eq!(
                parse(&header(t, 4096, 0)),
                Err(ImageError::BadTextOffset { text_offset: t })
            );
        }
        assert_eq!(
            parse(&header(0x8_0000, 4096, 0)).unwrap().text_offset,
            0x8_0000
        );
    }

    #[test]
    fn rejects_a_short_file_and_bad_magic() {
        assert_eq!(
            parse(&CLOUD_HEADER[..63]),
            Err(ImageError::TooShort { len: 63 })
        );
        assert_eq!(parse(&[]), Err(ImageError::TooShort { len: 0 }));
        let mut h = CLOUD_HEADER.to_vec();
        h[59] = 0;
        assert_eq!(parse(&h), Err(ImageError::BadMagic { found: 0x004d_5241 }));
        assert_eq!(
            parse(&[0x7f; 64]),
            Err(ImageError::BadMagic { found: 0x7f7f_7f7f })
        );
    }

    #[test]
    fn detects_and_rejects_an_efi_zboot_image_with_a_clear_message() {
        let mut z = vec![0u8; 128];
        z[0..4].copy_from_slice(b"MZ\0\0");
        z[4..8].copy_from_slice(b"zimg");
        z[8..12].copy_from_slice(&64u32.to_le_bytes());
        z[12..16].copy_from_slice(&10u32.to_le_bytes());
        z[24..29].copy_from_slice(b"gzip\0");
        let err = parse(&z).unwrap_err();
        assert_eq!(
            err,
            ImageError::EfiZboot {
                compression: *b"gzip\0\0\0\0"
            }
        );
        let msg = alloc::format!("{err}");
        assert!(
            msg.contains("zboot") && msg.contains("decompressed first"),
            "{msg}"
        );
        let (comp, payload) = zboot_payload(&z).unwrap();
        assert_eq!(&comp[..4], b"gzip");
        assert_eq!(payload.as_ptr(), z[64..].as_ptr());
        assert_eq!(payload.len(), 10);
        // A payload past the end of the file is not returned.
        z[12..16].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(zboot_payload(&z), None);
    }

    #[test]
    fn rejects_a_gzip_kernel() {
        assert_eq!(
            parse(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]),
            Err(ImageError::Gzip)
        );
    }
}
