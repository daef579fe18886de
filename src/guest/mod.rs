//! Turning the hypervisor's own initrd (the "ramdisk") into VMs ready to start.
//!
//! The ramdisk is a cpio "newc" archive, optionally gzip-compressed, holding one folder per VM:
//! `<vmdir>/vm.toml` plus the files it names (kernel, optional initrd and DTB). Everything here
//! is pure logic on byte slices; the caller maps the VM's memory and copies the bytes.
//!
//! - [`cpio`]: zero-copy newc reader.
//! - [`gzip`]: RFC 1952 header, inflate (miniz_oxide), CRC-32 and ISIZE checks.
//! - [`config`]: `vm.toml` parsing and validation, and the cross-VM admission check.
//! - [`ramdisk`]: archive -> list of VM specs, errors per VM.
//! - [`image`]: the arm64 Linux `Image` header.
//! - [`layout`]: where kernel, initrd and DTB go in guest RAM.
//! - [`fdt`]: the generated guest device tree.
#![forbid(unsafe_code)]

pub mod config;
pub mod cpio;
pub mod fdt;
pub mod gzip;
pub mod image;
pub mod layout;
pub mod ramdisk;
