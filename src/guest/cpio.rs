//! A zero-copy reader for cpio "newc" archives, the format of the Linux initramfs and of the
//! hypervisor's own ramdisk, as `cpio -o -H newc` writes them.
//!
//! Format (Linux `Documentation/driver-api/early-userspace/buffer-format.rst`, GNU cpio manual
//! "newc"): each entry is a 110-byte ASCII header, the NUL-terminated path name, zero padding up
//! to a multiple of 4 bytes counted from the start of the header, the file data, and zero padding
//! up to a multiple of 4 bytes. Header fields (all 8 hexadecimal ASCII digits after the 6-byte
//! magic):
//!
//! | offset | field       | meaning                                   |
//! |--------|-------------|-------------------------------------------|
//! | 0      | c_magic     | "070701" (newc) or "070702" (newc + crc)  |
//! | 6      | c_ino       | inode number                              |
//! | 14     | c_mode      | file type and permissions (st_mode)       |
//! | 22     | c_uid       |                                           |
//! | 30     | c_gid       |                                           |
//! | 38     | c_nlink     |                                           |
//! | 46     | c_mtime     |                                           |
//! | 54     | c_filesize  | bytes of data that follow the name        |
//! | 62     | c_maj       | device major of the file system           |
//! | 70     | c_min       |                                           |
//! | 78     | c_rmaj      | device major for device special files     |
//! | 86     | c_rmin      |                                           |
//! | 94     | c_namesize  | length of the name including its NUL      |
//! | 102    | c_chksum    | "070702": sum of the data bytes; else 0   |
//!
//! The archive ends with an entry named `TRAILER!!!`; `cpio` pads what follows to a 512-byte
//! block, and this reader ignores everything after the trailer.
//!
//! This module owns the byte-level format only; it knows nothing of VMs (see `ramdisk`).
#![forbid(unsafe_code)]

use core::fmt;

/// Size of a newc header.
pub const HEADER_LEN: usize = 110;
/// Magic of the plain newc format.
pub const MAGIC_NEWC: &[u8; 6] = b"070701";
/// Magic of the newc format with a data checksum.
pub const MAGIC_CRC: &[u8; 6] = b"070702";
/// Name of the entry that ends an archive.
pub const TRAILER: &[u8] = b"TRAILER!!!";

/// `st_mode` file-type bits (POSIX `<sys/stat.h>`).
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

/// A header field: its name (for errors) and its byte offset within the header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Field {
    Ino,
    Mode,
    Uid,
    Gid,
    Nlink,
    Mtime,
    FileSize,
    DevMajor,
    DevMinor,
    RdevMajor,
    RdevMinor,
    NameSize,
    Check,
}

impl Field {
    /// Offset of the field's 8 hex digits in the header (see the table in the module comment).
    const fn offset(self) -> usize {
        6 + 8 * (self as usize)
    }
    pub const fn name(self) -> &'static str {
        match self {
            Field::Ino => "c_ino",
            Field::Mode => "c_mode",
            Field::Uid => "c_uid",
            Field::Gid => "c_gid",
            Field::Nlink => "c_nlink",
            Field::Mtime => "c_mtime",
            Field::FileSize => "c_filesize",
            Field::DevMajor => "c_maj",
            Field::DevMinor => "c_min",
            Field::RdevMajor => "c_rmaj",
            Field::RdevMinor => "c_rmin",
            Field::NameSize => "c_namesize",
            Field::Check => "c_chksum",
        }
    }
}

/// Why an archive cannot be read. `offset` is the byte offset of the entry's header.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum CpioError {
    /// Fewer than 110 bytes remain where a header should start.
    TruncatedHeader { offset: usize },
    /// The header does not start with "070701" or "070702".
    BadMagic { offset: usize },
    /// A header field holds something other than 8 hexadecimal digits.
    BadHexField { offset: usize, field: Field },
    /// `c_namesize` is 0: a name needs at least its terminating NUL.
    EmptyName { offset: usize },
    /// The name (and its padding) runs past the end of the archive.
    TruncatedName { offset: usize },
    /// The last byte of the name is not NUL, or the name holds a NUL before its end.
    NameNotNulTerminated { offset: usize },
    /// The file data (and its padding) runs past the end of the archive.
    TruncatedData { offset: usize, size: u32 },
    /// A padding byte is not zero.
    BadPadding { offset: usize },
    /// A "070702" entry whose data does not sum to its `c_chksum`.
    ChecksumMismatch {
        offset: usize,
        expected: u32,
        actual: u32,
    },
    /// The archive ends without a `TRAILER!!!` entry.
    MissingTrailer { offset: usize },
}

impl fmt::Display for CpioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpioError::TruncatedHeader { offset } => {
                write!(f, "cpio: header at {offset:#x} is truncated")
            }
            CpioError::BadMagic { offset } => {
                write!(f, "cpio: no newc magic (070701/070702) at {offset:#x}")
            }
            CpioError::BadHexField { offset, field } => write!(
                f,
                "cpio: field {} of the header at {offset:#x} is not 8 hex digits",
                field.name()
            ),
            CpioError::EmptyName { offset } => {
                write!(f, "cpio: entry at {offset:#x} has c_namesize 0")
            }
            CpioError::TruncatedName { offset } => {
                write!(
                    f,
                    "cpio: name of the entry at {offset:#x} runs past the archive"
                )
            }
            CpioError::NameNotNulTerminated { offset } => {
                write!(
                    f,
                    "cpio: name of the entry at {offset:#x} is not NUL-terminated"
                )
            }
            CpioError::TruncatedData { offset, size } => write!(
                f,
                "cpio: the {size} data bytes of the entry at {offset:#x} run past the archive"
            ),
            CpioError::BadPadding { offset } => {
                write!(f, "cpio: non-zero padding byte at {offset:#x}")
            }
            CpioError::ChecksumMismatch {
                offset,
                expected,
                actual,
            } => write!(
                f,
                "cpio: entry at {offset:#x}: data sums to {actual:#x}, header says {expected:#x}"
            ),
            CpioError::MissingTrailer { offset } => {
                write!(
                    f,
                    "cpio: archive ends at {offset:#x} without a TRAILER!!! entry"
                )
            }
        }
    }
}

/// What kind of file an entry is, from the `S_IFMT` bits of its mode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
    /// Devices, FIFOs, sockets.
    Other,
}

/// One archive member. `name` excludes the terminating NUL; `data` borrows the archive.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Entry<'a> {
    pub name: &'a [u8],
    pub mode: u32,
    pub ino: u32,
    pub nlink: u32,
    pub mtime: u32,
    /// Device of the file system the file came from (with `ino`, identifies hard links).
    pub dev_major: u32,
    pub dev_minor: u32,
    pub data: &'a [u8],
    /// Byte offset of this entry's header in the archive.
    pub offset: usize,
}

impl<'a> Entry<'a> {
    pub fn kind(&self) -> EntryKind {
        match self.mode & S_IFMT {
            S_IFREG => EntryKind::File,
            S_IFDIR => EntryKind::Directory,
            S_IFLNK => EntryKind::Symlink,
            _ => EntryKind::Other,
        }
    }
    /// The name as UTF-8, if it is.
    pub fn name_str(&self) -> Option<&'a str> {
        core::str::from_utf8(self.name).ok()
    }
    /// Permission bits (the low 12 bits of the mode).
    pub fn permissions(&self) -> u32 {
        self.mode & 0o7777
    }
}

/// Iterates the entries of an archive up to (not including) `TRAILER!!!`. After the first
/// error the iterator yields nothing more.
#[derive(Clone, Debug)]
pub struct CpioReader<'a> {
    data: &'a [u8],
    pos: usize,
    finished: bool,
}

/// Reads the archive in `data` lazily.
pub fn entries(data: &[u8]) -> CpioReader<'_> {
    CpioReader {
        data,
        pos: 0,
        finished: false,
    }
}

/// Checks a whole archive: every header, name, padding and checksum, and the trailer.
pub fn validate(data: &[u8]) -> Result<(), CpioError> {
    entries(data).try_for_each(|e| e.map(|_| ()))
}

/// Rounds `n` up to a multiple of 4; `None` on overflow.
fn pad4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|v| v & !3)
}

/// Parses 8 ASCII hex digits (either case). Anything else, including a sign or space, fails.
fn parse_hex8(digits: &[u8]) -> Option<u32> {
    if digits.len() != 8 {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, &c| {
        let nibble = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        Some((acc << 4) | u32::from(nibble))
    })
}

impl<'a> CpioReader<'a> {
    fn field(&self, header: &[u8], field: Field) -> Result<u32, CpioError> {
        let at = field.offset();
        header
            .get(at..at + 8)
            .and_then(parse_hex8)
            .ok_or(CpioError::BadHexField {
                offset: self.pos,
                field,
            })
    }

    fn check_zero(&self, from: usize, to: usize) -> Result<(), CpioError> {
        match self.data[from..to].iter().position(|&b| b != 0) {
            Some(i) => Err(CpioError::BadPadding { offset: from + i }),
            None => Ok(()),
        }
    }

    /// Parses the entry at `self.pos`; returns it and the offset of the next header.
    fn parse_entry(&self) -> Result<(Entry<'a>, usize), CpioError> {
        let offset = self.pos;
        let rest = &self.data[offset..];
        if rest.is_empty() {
            return Err(CpioError::MissingTrailer { offset });
        }
        let header = rest
            .get(..HEADER_LEN)
            .ok_or(CpioError::TruncatedHeader { offset })?;
        let crc_format = match &header[..6] {
            m if m == MAGIC_NEWC => false,
            m if m == MAGIC_CRC => true,
            _ => return Err(CpioError::BadMagic { offset }),
        };
        // Validate every field, even those we do not use, so garbage is caught early.
        let mut values = [0u32; 13];
        for (i, field) in [
            Field::Ino,
            Field::Mode,
            Field::Uid,
            Field::Gid,
            Field::Nlink,
            Field::Mtime,
            Field::FileSize,
            Field::DevMajor,
            Field::DevMinor,
            Field::RdevMajor,
            Field::RdevMinor,
            Field::NameSize,
            Field::Check,
        ]
        .into_iter()
        .enumerate()
        {
            values[i] = self.field(header, field)?;
        }
        let [
            ino,
            mode,
            _uid,
            _gid,
            nlink,
            mtime,
            file_size,
            dev_major,
            dev_minor,
            _,
            _,
            name_size,
            check,
        ] = values;

        if name_size == 0 {
            return Err(CpioError::EmptyName { offset });
        }
        // Name: namesize bytes after the header, the last one NUL; then pad to 4.
        let name_start = offset + HEADER_LEN;
        let name_end = name_start
            .checked_add(name_size as usize)
            .filter(|&e| e <= self.data.len())
            .ok_or(CpioError::TruncatedName { offset })?;
        let data_start = pad4(name_end)
            .filter(|&e| e <= self.data.len())
            .ok_or(CpioError::TruncatedName { offset })?;
        let name_with_nul = &self.data[name_start..name_end];
        let name = &name_with_nul[..name_with_nul.len() - 1];
        if name_with_nul.last() != Some(&0) || name.contains(&0) {
            return Err(CpioError::NameNotNulTerminated { offset });
        }
        self.check_zero(name_end, data_start)?;

        let data_end = data_start
            .checked_add(file_size as usize)
            .filter(|&e| e <= self.data.len())
            .ok_or(CpioError::TruncatedData {
                offset,
                size: file_size,
            })?;
        let data = &self.data[data_start..data_end];
        let is_trailer = name == TRAILER;
        // The trailer is the last thing `cpio` pads; what follows it is not ours to check.
        let next = if is_trailer {
            data_end
        } else {
            let next = pad4(data_end).filter(|&e| e <= self.data.len()).ok_or(
                CpioError::TruncatedData {
                    offset,
                    size: file_size,
                },
            )?;
            self.check_zero(data_end, next)?;
            next
        };
        if crc_format {
            let actual = data
                .iter()
                .fold(0u32, |acc, &b| acc.wrapping_add(u32::from(b)));
            if actual != check {
                return Err(CpioError::ChecksumMismatch {
                    offset,
                    expected: check,
                    actual,
                });
            }
        }
        Ok((
            Entry {
                name,
                mode,
                ino,
                nlink,
                mtime,
                dev_major,
                dev_minor,
                data,
                offset,
            },
            next,
        ))
    }
}

impl<'a> Iterator for CpioReader<'a> {
    type Item = Result<Entry<'a>, CpioError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        match self.parse_entry() {
            Ok((entry, _)) if entry.name == TRAILER => {
                self.finished = true;
                None
            }
            Ok((entry, next)) => {
                self.pos = next;
                Some(Ok(entry))
            }
            Err(e) => {
                self.finished = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec::Vec;

    /// Builds one newc entry by hand, as `cpio -o -H newc` would.
    pub(crate) fn push_entry(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
        push_entry_magic(out, MAGIC_NEWC, name, mode, data, 0);
    }

    /// An entry with a given inode number and link count (for hard links).
    pub(crate) fn push_linked_entry(
        out: &mut Vec<u8>,
        name: &str,
        ino: u32,
        nlink: u32,
        data: &[u8],
    ) {
        push_entry_fields(out, MAGIC_NEWC, name, 0o100_644, ino, nlink, data, 0);
    }

    fn push_entry_magic(
        out: &mut Vec<u8>,
        magic: &[u8; 6],
        name: &str,
        mode: u32,
        data: &[u8],
        check: u32,
    ) {
        push_entry_fields(out, magic, name, mode, 1, 1, data, check);
    }

    #[allow(clippy::too_many_arguments)]
    fn push_entry_fields(
        out: &mut Vec<u8>,
        magic: &[u8; 6],
        name: &str,
        mode: u32,
        ino: u32,
        nlink: u32,
        data: &[u8],
        check: u32,
    ) {
        out.extend_from_slice(magic);
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            check,
        ];
        for v in fields {
            out.extend_from_slice(format!("{v:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }

    pub(crate) fn push_trailer(out: &mut Vec<u8>) {
        push_entry(out, "TRAILER!!!", 0, &[]);
        while !out.len().is_multiple_of(512) {
            out.push(0);
        }
    }

    fn sample() -> Vec<u8> {
        let mut a = Vec::new();
        push_entry(&mut a, ".", 0o040_755, &[]);
        push_entry(&mut a, "dir", 0o040_755, &[]);
        push_entry(&mut a, "dir/file.txt", 0o100_644, b"hello");
        push_entry(&mut a, "dir/link", 0o120_777, b"file.txt");
        push_trailer(&mut a);
        a
    }

    #[test]
    fn reads_every_entry_before_the_trailer() {
        let a = sample();
        let got: Vec<_> = entries(&a).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].name, b".");
        assert_eq!(got[0].kind(), EntryKind::Directory);
        assert_eq!(got[2].name_str(), Some("dir/file.txt"));
        assert_eq!(got[2].data, b"hello");
        assert_eq!(got[2].kind(), EntryKind::File);
        assert_eq!(got[2].permissions(), 0o644);
        assert_eq!(got[3].kind(), EntryKind::Symlink);
        assert_eq!(got[3].data, b"file.txt");
        assert_eq!(validate(&a), Ok(()));
    }

    #[test]
    fn data_slices_borrow_the_archive() {
        let a = sample();
        let e = entries(&a).nth(2).unwrap().unwrap();
        let base = a.as_ptr() as usize;
        let p = e.data.as_ptr() as usize;
        assert!(p >= base && p < base + a.len());
        assert_eq!(
            p % 4,
            base % 4,
            "data starts 4-byte aligned relative to the archive"
        );
    }

    #[test]
    fn ignores_bytes_after_the_trailer() {
        let mut a = sample();
        a.extend_from_slice(b"anything at all");
        assert_eq!(entries(&a).count(), 4);
        assert_eq!(validate(&a), Ok(()));
    }

    #[test]
    fn accepts_lowercase_hex_and_the_crc_format() {
        let mut a = Vec::new();
        let data = b"\x01\x02\xff";
        push_entry_magic(&mut a, MAGIC_CRC, "f", 0o100_600, data, 0x102);
        push_trailer(&mut a);
        // Lower-case the hex digits of the first header.
        for b in &mut a[6..HEADER_LEN] {
            b.make_ascii_lowercase();
        }
        let e = entries(&a).next().unwrap().unwrap();
        assert_eq!(e.data, data);
        assert_eq!(e.mode, 0o100_600);
    }

    #[test]
    fn rejects_a_crc_entry_whose_data_does_not_sum_to_the_checksum() {
        let mut a = Vec::new();
        push_entry_magic(&mut a, MAGIC_CRC, "f", 0o100_600, b"abc", 5);
        push_trailer(&mut a);
        assert_eq!(
            validate(&a),
            Err(CpioError::ChecksumMismatch {
                offset: 0,
                expected: 5,
                actual: 0x126
            })
        );
    }

    #[test]
    fn rejects_a_missing_trailer() {
        let mut a = Vec::new();
        push_entry(&mut a, "f", 0o100_644, b"data");
        let len = a.len();
        assert_eq!(validate(&a), Err(CpioError::MissingTrailer { offset: len }));
        assert_eq!(validate(&[]), Err(CpioError::MissingTrailer { offset: 0 }));
    }

    #[test]
    fn rejects_bad_magic() {
        let mut a = sample();
        a[5] = b'7';
        assert_eq!(validate(&a), Err(CpioError::BadMagic { offset: 0 }));
        assert_eq!(
            validate(&[0u8; 600]),
            Err(CpioError::BadMagic { offset: 0 })
        );
    }

    #[test]
    fn rejects_a_non_hex_digit_in_any_field_naming_the_field() {
        let a = sample();
        for (i, field) in [
            Field::Ino,
            Field::Mode,
            Field::FileSize,
            Field::NameSize,
            Field::Check,
        ]
        .into_iter()
        .enumerate()
        {
            let mut bad = a.clone();
            bad[field.offset() + i % 8] = b'g';
            assert_eq!(
                validate(&bad),
                Err(CpioError::BadHexField { offset: 0, field })
            );
        }
        let mut spaced = a.clone();
        spaced[Field::Uid.offset()] = b' ';
        assert_eq!(
            validate(&spaced),
            Err(CpioError::BadHexField {
                offset: 0,
                field: Field::Uid
            })
        );
    }

    #[test]
    fn rejects_a_truncated_header() {
        let a = sample();
        assert_eq!(
            validate(&a[..50]),
            Err(CpioError::TruncatedHeader { offset: 0 })
        );
        // Cut inside the second header.
        let second = entries(&a).nth(1).unwrap().unwrap().offset;
        assert_eq!(
            validate(&a[..second + 20]),
            Err(CpioError::TruncatedHeader { offset: second })
        );
    }

    #[test]
    fn rejects_truncated_names_and_data() {
        let a = sample();
        let file = entries(&a).nth(2).unwrap().unwrap();
        // Name "dir/file.txt\0" is 13 bytes: cut in its middle.
        assert_eq!(
            validate(&a[..file.offset + HEADER_LEN + 5]),
            Err(CpioError::TruncatedName {
                offset: file.offset
            })
        );
        // Cut inside the data.
        let data_start = file.data.as_ptr() as usize - a.as_ptr() as usize;
        assert_eq!(
            validate(&a[..data_start + 2]),
            Err(CpioError::TruncatedData {
                offset: file.offset,
                size: 5
            })
        );
        // Cut inside the data's padding ("hello" is padded with 3 zeros).
        assert_eq!(
            validate(&a[..data_start + 6]),
            Err(CpioError::TruncatedData {
                offset: file.offset,
                size: 5
            })
        );
    }

    #[test]
    fn rejects_a_huge_file_size() {
        let mut a = Vec::new();
        push_entry(&mut a, "f", 0o100_644, b"x");
        push_trailer(&mut a);
        a[Field::FileSize.offset()..Field::FileSize.offset() + 8].copy_from_slice(b"FFFFFFFF");
        assert_eq!(
            validate(&a),
            Err(CpioError::TruncatedData {
                offset: 0,
                size: 0xffff_ffff
            })
        );
    }

    #[test]
    fn rejects_nonzero_padding_after_name_and_after_data() {
        let a = sample();
        let file = entries(&a).nth(2).unwrap().unwrap();
        let data_start = file.data.as_ptr() as usize - a.as_ptr() as usize;
        // Header 110 + name 13 = 123, padded to 124: one padding byte before the data.
        let mut bad = a.clone();
        bad[data_start - 1] = 1;
        assert_eq!(
            validate(&bad),
            Err(CpioError::BadPadding {
                offset: data_start - 1
            })
        );
        let mut bad = a.clone();
        bad[data_start + 5] = 0xff;
        assert_eq!(
            validate(&bad),
            Err(CpioError::BadPadding {
                offset: data_start + 5
            })
        );
    }

    #[test]
    fn rejects_names_without_their_nul_or_with_an_inner_nul() {
        let mut a = Vec::new();
        push_entry(&mut a, "abcd", 0o100_644, b"");
        push_trailer(&mut a);
        let mut bad = a.clone();
        bad[HEADER_LEN + 4] = b'x';
        assert_eq!(
            validate(&bad),
            Err(CpioError::NameNotNulTerminated { offset: 0 })
        );
        let mut bad = a.clone();
        bad[HEADER_LEN + 1] = 0;
        assert_eq!(
            validate(&bad),
            Err(CpioError::NameNotNulTerminated { offset: 0 })
        );
        let mut bad = a.clone();
        bad[Field::NameSize.offset()..Field::NameSize.offset() + 8].copy_from_slice(b"00000000");
        assert_eq!(validate(&bad), Err(CpioError::EmptyName { offset: 0 }));
    }

    #[test]
    fn stops_after_the_first_error() {
        let mut a = sample();
        a[0] = b'x';
        let mut it = entries(&a);
        assert!(matches!(it.next(), Some(Err(CpioError::BadMagic { .. }))));
        assert_eq!(it.next(), None);
    }

    /// `fixture.cpio` was made by `cpio -o -H newc` from tests/fixtures/guest/cpio-tree (see
    /// tests/fixtures/guest/README.md).
    #[test]
    fn reads_an_archive_written_by_gnu_cpio() {
        let a = include_bytes!("../../tests/fixtures/guest/fixture.cpio");
        let got: Vec<_> = entries(a).collect::<Result<_, _>>().unwrap();
        let names: Vec<&str> = got.iter().map(|e| e.name_str().unwrap()).collect();
        assert_eq!(names, ["vm1", "vm1/vm.toml", "vm1/Image", "vm1/empty"]);
        assert_eq!(got[0].kind(), EntryKind::Directory);
        assert_eq!(
            got[1].data,
            include_bytes!("../../tests/fixtures/guest/cpio-tree/vm1/vm.toml")
        );
        assert_eq!(
            got[2].data,
            include_bytes!("../../tests/fixtures/guest/cpio-tree/vm1/Image")
        );
        assert_eq!(got[3].data, b"");
        assert_eq!(got[3].kind(), EntryKind::File);
    }

    #[test]
    fn reads_an_archive_written_by_gnu_cpio_in_crc_format() {
        let a = include_bytes!("../../tests/fixtures/guest/fixture-crc.cpio");
        let got: Vec<_> = entries(a).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[2].data,
            include_bytes!("../../tests/fixtures/guest/cpio-tree/vm1/Image")
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let n = entries(&data).take(10_000).count();
                prop_assert!(n <= data.len() / HEADER_LEN + 1);
            }

            #[test]
            fn never_panics_on_a_mutated_archive(
                flips in proptest::collection::vec((0usize..1024, any::<u8>()), 1..8),
                cut in 0usize..1100,
            ) {
                let mut a = sample();
                for (at, v) in flips {
                    let i = at % a.len();
                    a[i] = v;
                }
                let a = &a[..cut.min(a.len())];
                for e in entries(a).flatten() {
                    // Every slice lies inside the archive.
                    let base = a.as_ptr() as usize;
                    let p = e.data.as_ptr() as usize;
                    prop_assert!(p >= base && p + e.data.len() <= base + a.len());
                }
            }

            #[test]
            fn round_trips_generated_archives(
                files in proptest::collection::vec(("[a-z]{1,12}", proptest::collection::vec(any::<u8>(), 0..64)), 0..6)
            ) {
                let mut a = Vec::new();
                for (name, data) in &files {
                    push_entry(&mut a, name, 0o100_644, data);
                }
                push_trailer(&mut a);
                let got: Vec<_> = entries(&a).collect::<Result<_, _>>().unwrap();
                prop_assert_eq!(got.len(), files.len());
                for (e, (name, data)) in got.iter().zip(&files) {
                    prop_assert_eq!(e.name, name.as_bytes());
                    prop_assert_eq!(e.data, &data[..]);
                }
            }
        }
    }
}
