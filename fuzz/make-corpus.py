#!/usr/bin/env python3
"""Regenerates the committed seed corpora under fuzz/corpus/<target>/.

Usage: python3 fuzz/make-corpus.py   (from anywhere; needs cpio and gzip on PATH)

Seeds are small, real inputs: archives made by GNU cpio from the repository's guest fixtures,
gzip files made by gzip and by hand (every optional header field), the vm.toml files of the
repository, real arm64 Image headers, the QEMU and Raspberry Pi DTBs of tests/fixtures/platform,
ESR values a Linux guest really causes, and operation sequences that replay what Linux does to
a PL011 and a GIC. The fuzz harnesses (fuzz/src/harness.rs) define the byte formats of the
operation sequences; keep the two in step. Output is reproducible (fixed times and owners).
"""

import gzip as gz
import os
import shutil
import struct
import subprocess
import tempfile
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO, "fuzz", "corpus")
GUEST = os.path.join(REPO, "tests", "fixtures", "guest")
PLATFORM = os.path.join(REPO, "tests", "fixtures", "platform")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def cpio_of(root, names, fmt="newc"):
    """GNU cpio -o of `names` (relative to `root`), reproducible."""
    for n in names:
        os.utime(os.path.join(root, n), (0, 0), follow_symlinks=False)
    r = subprocess.run(
        ["cpio", "-o", "-H", fmt, "--owner=0:0", "--quiet", "--reproducible"],
        cwd=root,
        input="".join(n + "\n" for n in names).encode(),
        capture_output=True,
        check=True,
    )
    return r.stdout


def gzip_n(data, level=9):
    """`gzip -n -<level>`: no name, no time."""
    r = subprocess.run(["gzip", "-n", f"-{level}"], input=data, capture_output=True, check=True)
    return r.stdout


def gzip_member(data, flags=0, extra=b"", name=b"", comment=b"", hcrc=False, level=6):
    """A gzip member built field by field (RFC 1952 2.3) to cover every optional field."""
    flg = flags
    hdr = bytearray(b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + b"\x00\x03")
    if extra:
        flg |= 0x04
        hdr += struct.pack("<H", len(extra)) + extra
    if name:
        flg |= 0x08
        hdr += name + b"\x00"
    if comment:
        flg |= 0x10
        hdr += comment + b"\x00"
    if hcrc:
        flg |= 0x02
    hdr[3] = flg
    if hcrc:
        hdr += struct.pack("<H", zlib.crc32(bytes(hdr)) & 0xFFFF)
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    body = c.compress(data) + c.flush()
    return bytes(hdr) + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def image_header(text_offset=0, image_size=0x200000, flags=0x0A):
    """An arm64 Image header (Documentation/arch/arm64/booting.rst): code0/1, text_offset,
    image_size, flags, res2-4, magic "ARM\\x64", res5."""
    h = struct.pack("<IIQQQQQQII", 0x91005A4D, 0x14000000, text_offset, image_size, flags,
                    0, 0, 0, 0x644D5241, 0)
    assert len(h) == 64
    return h


def zboot(payload, comp=b"gzip"):
    """An EFI zboot image (drivers/firmware/efi/libstub/zboot-header.S): "MZ", "zimg",
    payload offset and size, compression type at 24."""
    off = 64
    h = bytearray(64)
    h[0:2] = b"MZ"
    h[4:8] = b"zimg"
    struct.pack_into("<II", h, 8, off, len(payload))
    h[24:24 + len(comp)] = comp
    return bytes(h) + payload


def seeds_cpio_gzip_ramdisk_image_config():
    tree = os.path.join(GUEST, "cpio-tree")
    fixture = read(os.path.join(GUEST, "fixture.cpio"))
    put("cpio", "fixture.cpio", fixture)
    put("cpio", "fixture-crc.cpio", read(os.path.join(GUEST, "fixture-crc.cpio")))
    with tempfile.TemporaryDirectory() as t:
        put("cpio", "trailer-only.cpio", cpio_of(t, []))
        # Every entry kind: directory, file, symlink, FIFO, hard link.
        os.mkdir(os.path.join(t, "d"))
        with open(os.path.join(t, "d", "f"), "wb") as f:
            f.write(b"hello\n")
        os.link(os.path.join(t, "d", "f"), os.path.join(t, "d", "hard"))
        os.symlink("f", os.path.join(t, "d", "link"))
        os.mkfifo(os.path.join(t, "d", "fifo"))
        kinds = cpio_of(t, ["d", "d/f", "d/hard", "d/link", "d/fifo"])
        put("cpio", "kinds.cpio", kinds)
        put("cpio", "kinds-crc.cpio", cpio_of(t, ["d", "d/f", "d/link"], "crc"))

    # gzip: real gzip output, every header field, several members, stored blocks, padding.
    put("gzip", "hello.gz", gzip_n(b"hello, world\n"))
    put("gzip", "empty.gz", gzip_n(b""))
    put("gzip", "fixture.cpio.gz", gzip_n(fixture))
    put("gzip", "all-fields.gz", gzip_member(b"kestrel\n" * 8, extra=b"AB\x02\x00hi",
                                             name=b"f.txt", comment=b"c", hcrc=True))
    put("gzip", "two-members.gz", gzip_n(b"first\n") + gzip_member(b"second\n", name=b"2"))
    put("gzip", "stored.gz", gzip_member(bytes(range(256)), level=0))
    put("gzip", "zero-padded.gz", gzip_n(b"padded\n") + bytes(16))
    put("gzip", "zeros-4k.gz", gzip_n(bytes(4096)))
    # Output of exactly the harness's small limit (512 bytes), and one byte more.
    put("gzip", "exactly-512.gz", gzip_n(bytes(range(256)) * 2))
    put("gzip", "513.gz", gzip_n(bytes(range(256)) * 2 + b"!"))

    # image: real headers and every flag combination that matters.
    cloud = read(os.path.join(GUEST, "image-cloud-header.bin"))
    put("image", "cloud-header.bin", cloud)
    put("image", "fake-kernel", read(os.path.join(tree, "vm1", "Image")))
    put("image", "legacy.bin", image_header(0x80000, 0, 0))
    put("image", "16k-anywhere.bin", image_header(0, 0x1000000, 0b1100))
    put("image", "big-endian.bin", image_header(0, 0x1000000, 1))
    put("image", "zboot-gzip.bin", zboot(gzip_n(cloud + b"text" * 4)))
    put("image", "gzip.bin", gzip_n(cloud))

    # config: the repository's vm.toml files and one with every key.
    for name, path in [
        ("linux.toml", os.path.join(REPO, "guests", "linux", "vm.toml")),
        ("linux2.toml", os.path.join(REPO, "guests", "linux2", "vm.toml")),
        ("good.toml", os.path.join(GUEST, "vms", "good", "vm.toml")),
        ("broken.toml", os.path.join(GUEST, "vms", "broken", "vm.toml")),
        ("cpio-tree.toml", os.path.join(tree, "vm1", "vm.toml")),
    ]:
        put("config", name, read(path))
    full = b"""name = "web-1"
kernel = "./boot/Image"
initrd = "initrd.img"
dtb = "board.dtb"
bootargs = "console=ttyAMA0 root=/dev/vda"
memory = "1GiB"
cpus = 2
physical_cpus = [1, 3]
ram_base = 0x8000_0000
console = "none"
autostart = false
on_reset = "stop"
spis = 96

[[devices]]
name = "eth0"
base = 0xfe30_0000
size = "64K"
ipa = 0x0a00_0000
interrupts = [10, 11]

[[devices]]
name = "mmc"
base = 0xfe34_0000
size = 4096
"""
    put("config", "every-key.toml", full)

    # ramdisk: archives qemu/mkramdisk.sh would make, gzip or not, with plain, gzip and zboot
    # kernels, an initrd, a DTB and a hard-linked kernel shared by two VMs.
    put("ramdisk", "ramdisk-fixture.cpio.gz", read(os.path.join(GUEST, "ramdisk-fixture.cpio.gz")))
    put("ramdisk", "fixture.cpio", fixture)
    fake = read(os.path.join(tree, "vm1", "Image"))
    dtb = read(os.path.join(PLATFORM, "no-memory.dtb"))
    with tempfile.TemporaryDirectory() as t:
        files = {
            "a/vm.toml": b'kernel = "Image"\ninitrd = "initrd.img"\nmemory = "64M"\ncpus = 2\n',
            "a/Image": fake,
            "a/initrd.img": b"initrd\n",
            "b/vm.toml": b'kernel = "Image.gz"\ndtb = "board.dtb"\nmemory = "32M"\n'
                         b'console = "none"\n',
            "b/Image.gz": gzip_n(fake),
            "b/board.dtb": dtb,
            "c/vm.toml": b'kernel = "vmlinuz.efi"\nmemory = "32M"\nram_base = 0x1_0000_0000\n',
            "c/vmlinuz.efi": zboot(gzip_n(fake)),
        }
        for path, data in files.items():
            os.makedirs(os.path.join(t, os.path.dirname(path)), exist_ok=True)
            with open(os.path.join(t, path), "wb") as f:
                f.write(data)
        os.makedirs(os.path.join(t, "d"))
        os.link(os.path.join(t, "a", "Image"), os.path.join(t, "d", "Image"))
        with open(os.path.join(t, "d", "vm.toml"), "wb") as f:
            f.write(b'kernel = "Image"\nmemory = "32M"\n')
        names = ["a", "a/vm.toml", "a/Image", "a/initrd.img", "b", "b/vm.toml", "b/Image.gz",
                 "b/board.dtb", "c", "c/vm.toml", "c/vmlinuz.efi", "d", "d/vm.toml", "d/Image"]
        archive = cpio_of(t, names)
        put("ramdisk", "four-vms.cpio", archive)
        put("ramdisk", "four-vms.cpio.gz", gzip_n(archive))


def seeds_platform():
    for f in sorted(os.listdir(PLATFORM)):
        # The 1 MiB unpacked blob only repeats virt-gicv3-4cpu-1g.dtb with padding.
        if f.endswith(".dtb") and "unpacked" not in f:
            put("platform", f, read(os.path.join(PLATFORM, f)))


# ESR_EL2 fields (Arm ARM D24.2.40): EC [31:26], IL [25], ISS [24:0]; data abort ISS: ISV [24],
# SAS [23:22], SSE [21], SRT [20:16], SF [15], AR [14], S1PTW [7], WnR [6], DFSC [5:0].
def esr(ec, iss):
    return (ec << 26) | (1 << 25) | iss


def dabt(write, sas, srt, sf=0, sse=0, isv=1, s1ptw=0, cm=0, dfsc=0x07):
    return esr(0x24, (isv << 24) | (sas << 22) | (sse << 21) | (srt << 16) | (sf << 15)
               | (cm << 8) | (s1ptw << 7) | (write << 6) | dfsc)


def seeds_esr():
    uart = 0x0900_0000
    hpfar = (uart >> 12) << 4          # HPFAR_EL2.FIPA [47:4] = IPA[55:12]
    far = 0xFFFF_8000_0900_0018        # a Linux fixmap VA of UARTFR (offset 0x18)
    cases = {
        # str w1, [x0] to UARTDR (what earlycon does for every character).
        "pl011-str-w1": (dabt(1, 2, 1), hpfar, 0xFFFF_8000_0900_0000, ord("K")),
        # ldr w2, [x0, #0x18]: polling UARTFR.
        "pl011-ldr-fr": (dabt(0, 2, 2), hpfar, far, 0x90),
        # ldrsb x3, [x0]: sign-extending byte load into an X register.
        "ldrsb-x3": (dabt(0, 0, 3, sf=1, sse=1), hpfar, far, 0x80),
        # strh wzr: a store of zero from XZR.
        "strh-wzr": (dabt(1, 1, 31), hpfar, far, 0xDEAD),
        # ldr x4: a 64-bit load (GICD_IROUTER).
        "ldr-x4": (dabt(0, 3, 4, sf=1), (0x0800_6100 >> 12) << 4, 0x0800_6100, 0),
        # ldp: no syndrome (ISV = 0).
        "ldp-no-isv": (dabt(0, 0, 0, isv=0), hpfar, far, 0),
        # A stage-2 fault on a stage-1 table walk, and a cache maintenance fault.
        "s1ptw": (dabt(0, 0, 0, isv=0, s1ptw=1), 0x4_0000 << 4, 0x1000, 0),
        "dc-civac": (dabt(1, 0, 0, isv=0, cm=1), hpfar, far, 0),
        # Instruction abort from EL1 (EC 0x20), translation fault level 3.
        "iabt": (esr(0x20, 0x07), 0x4_1000 << 4, 0xFFFF_8000_1000_0000, 0),
        "wfi": (esr(0x01, 0), 0, 0, 0),
        "wfe": (esr(0x01, 1), 0, 0, 0),
        # WFET x5 (FEAT_WFxT): TI = 0b11, RV = 1, Rn = 5.
        "wfet": (esr(0x01, (1 << 14) | (5 << 5) | 3), 0, 0, 0),
        "hvc0": (esr(0x16, 0), 0, 0, 0),            # PSCI over HVC
        "smc0": (esr(0x17, 0), 0, 0, 0),
        # msr ICC_SGI1R_EL1, x1 (Op0 3, Op1 0, CRn 12, CRm 11, Op2 5, Rt 1, write).
        "msr-sgi1r": (esr(0x18, (3 << 20) | (5 << 17) | (12 << 10) | (1 << 5) | (11 << 1)),
                      0, 0, 0),
        # mrs x0, CNTPCT_EL0 (Op0 3, Op1 3, CRn 14, CRm 0, Op2 1, read).
        "mrs-cntpct": (esr(0x18, (3 << 20) | (1 << 17) | (3 << 14) | (14 << 10) | 1), 0, 0, 0),
        "unknown": (0x0200_0000, 0, 0, 0),
        "brk": (esr(0x3C, 0x3E8), 0, 0, 0),
    }
    for name, (e, h, f, rt) in cases.items():
        put("esr", name, struct.pack("<QQQQ", e, h, f, rt))


# PL011 operations (fuzz/src/harness.rs `pl011`): first byte 0 = reset state, 1 = as firmware
# leaves it; then per operation a tag (% 4): 0 read (u16 offset, width), 1 write (u16 offset,
# width, u32 value), 2 receive (byte), 3 query. Width: 0 byte, 1 half, 2 word, 3 double.
def pl_rd(off, w=2):
    return struct.pack("<BHB", 0, off, w)


def pl_wr(off, val, w=2):
    return struct.pack("<BHBI", 1, off, w, val)


def pl_rx(byte):
    return bytes([2, byte])


def seeds_pl011():
    DR, RSR, FR, IBRD, FBRD, LCRH, CR, IMSC, RIS, MIS, ICR = (
        0x00, 0x04, 0x18, 0x24, 0x28, 0x2C, 0x30, 0x38, 0x3C, 0x40, 0x44)
    # Linux pl011_startup: baud, 8N1 + FIFO, enable, unmask RX/RT, then traffic both ways.
    linux = (bytes([0]) + pl_wr(IBRD, 13) + pl_wr(FBRD, 1) + pl_wr(LCRH, 0x70)
             + pl_wr(CR, 0x301) + pl_wr(ICR, 0x7FF) + pl_wr(IMSC, 0x50)
             + b"".join(pl_rx(c) for c in b"root\n") + pl_rd(MIS) + pl_rd(FR)
             + b"".join(pl_rd(DR) for _ in range(5)) + pl_rd(FR)
             + b"".join(pl_wr(DR, c) for c in b"# ") + pl_rd(RIS) + bytes([3]))
    put("pl011", "linux-startup", linux)
    # earlycon on a firmware-initialized UART: poll FR, write DR, byte and halfword accesses.
    early = (bytes([1]) + b"".join(pl_rd(FR) + pl_wr(DR, c) for c in b"Booting")
             + pl_rd(0xFE0, 0) + pl_rd(0xFE8, 1) + pl_rd(0x30, 3))
    put("pl011", "earlycon", early)
    # Overrun: FIFO off (depth 1), two bytes in, OE in RSR and RIS, clear with ICR and RSR.
    overrun = (bytes([1]) + pl_wr(LCRH, 0x60) + pl_wr(IMSC, 0x400) + pl_rx(0x41) + pl_rx(0x42)
               + pl_rd(RSR) + pl_rd(MIS) + pl_wr(ICR, 0x400) + pl_wr(RSR, 0) + pl_rd(DR))
    put("pl011", "overrun", overrun)
    # Loopback: CR.LBE, a write comes back as a read.
    loop = (bytes([1]) + pl_wr(CR, 0x381) + pl_wr(IMSC, 0x10) + pl_wr(DR, 0x5A) + pl_rd(DR)
            + pl_wr(LCRH + 1, 0, 0) + pl_rd(0x1000))
    put("pl011", "loopback", loop)


# vGIC operations (fuzz/src/harness.rs `vgic`): header (config, SPI count / 32, LR count - 1),
# then per operation: tag (% 13), vCPU, arguments. MMIO: tag 0 read / 1 write, [GICv3 only: a
# byte whose bit 0 selects the redistributors], u32 offset, width, [u64 value for a write].
def mmio(vcpu, off, w, value=None, redist=None):
    b = bytes([0 if value is None else 1, vcpu])
    if redist is not None:
        b += bytes([1 if redist else 0])
    b += struct.pack("<IB", off, w)
    if value is not None:
        b += struct.pack("<Q", value)
    return b


def op(tag, vcpu, *args):
    return bytes([tag, vcpu]) + bytes(args)


def inject_ppi(v, intid):
    return op(2, v, intid)


def spi_level(intid, level):
    return op(3, 0, level) + struct.pack("<H", intid)


def sgi_v3(sender, value, reg=1):
    return op(5, sender, reg) + struct.pack("<Q", value)


def map_hw(v, intid, pintid, kind):
    return op(6, v) + struct.pack("<HHB", intid, pintid, kind)


def flush(v):
    return op(7, v)


def exit_(v):
    return op(8, v)


def ack(v):
    return op(9, v)


def eoi(v, pick=0):
    return op(10, v, pick)


def maint(v):
    return op(11, v)


def reset(v):
    return op(12, v)


def raise_edge(intid):
    return op(4, 0) + struct.pack("<H", intid)


def cpu_off_on(v):
    # Tag 12's odd high multiple: PSCI CPU_OFF of a running vCPU, CPU_ON of a stopped one.
    return op(25, v)


def seeds_vgic_cpu_off():
    # A passthrough SPI's pending and active state written by the guest (HwStateChanged), then
    # a 1-of-N SPI hinted to vCPU 0, which stops before it takes it: vCPU 1 must get it (the
    # end-of-run check finds it lost if CPU_OFF does not offer it to the other target).
    for target, v3 in (("vgic_v3", True), ("vgic_v2", False)):
        d = (lambda v, off, w, val=None: mmio(v, off, w, val, redist=False)) if v3 else mmio
        b = bytes([1, 1, 3])
        b += d(0, 0x0, 2, 0x13 if v3 else 0x3)                  # CTLR: groups (and ARE)
        b += d(0, 0x84, 2, 0xFFFF_FFFF) + d(0, 0x104, 2, 0x3)    # IGROUPR1, ISENABLER1
        b += d(0, 0xC08, 2, 0x2)                                 # ICFGR2: SPI 32 edge
        if v3:
            b += d(0, 0x6100, 3, 1 << 31) + d(0, 0x6108, 3, 0)   # IROUTER32 IRM, IROUTER33
        else:
            b += d(0, 0x820, 0, 0x3) + d(0, 0x821, 0, 0x1)       # ITARGETSR32 both, 33 CPU 0
        b += map_hw(0, 33, 33, 1)
        for off in (0x204, 0x284, 0x304, 0x384, 0x204, 0x304, 0x284):
            b += d(0, off, 2, 0x2)                               # I[SC]PENDR1 / I[SC]ACTIVER1
        b += flush(0) + ack(0) + exit_(0) + d(0, 0x384, 2, 0x2) + flush(0) + eoi(0) + exit_(0)
        b += raise_edge(32) + cpu_off_on(1) + flush(0) + ack(0) + eoi(0) + exit_(0)
        # vCPU 1 back on takes an exit first (its start-up rescan is done), then the edge.
        b += cpu_off_on(1) + flush(1) + exit_(1) + raise_edge(32) + cpu_off_on(0)
        put(target, "cpu-off-1-of-n", b)


def seeds_vgic():
    # GICv3, 2 vCPUs, 64 SPIs, 4 LRs: what Linux's gic_dist_init / gic_cpu_init write, then a
    # timer PPI, a level SPI, an SGI, a HW-linked timer and an LR overflow.
    d = lambda v, off, w, val=None: mmio(v, off, w, val, redist=False)  # noqa: E731
    r = lambda v, off, w, val=None: mmio(v, off, w, val, redist=True)  # noqa: E731
    boot = bytes([1, 2, 3])
    boot += d(0, 0x0, 2, 0) + d(0, 0x4, 2) + d(0, 0x8, 2)            # CTLR off, TYPER, IIDR
    boot += d(0, 0x184, 2, 0xFFFF_FFFF) + d(0, 0x384, 2, 0xFFFF_FFFF)  # ICENABLER1, ICACTIVER1
    boot += d(0, 0x424, 2, 0xA0A0_A0A0) + d(0, 0xC08, 2, 0)            # IPRIORITYR, ICFGR2
    boot += d(0, 0x6100, 3, 0) + d(0, 0x6108, 3, 1)                    # IROUTER32/33
    boot += d(0, 0x0, 2, 0x12) + d(0, 0xFFE8, 2)                       # ARE | EnableGrp1, PIDR2
    for v in range(2):
        base = v * 0x20000
        boot += r(v, base + 0x8, 3) + r(v, base + 0x14, 2, 0) + r(v, base + 0x14, 2)  # TYPER, WAKER
        boot += r(v, base + 0x10080, 2, 0xFFFF_FFFF)                   # IGROUPR0
        boot += r(v, base + 0x10100, 2, 0x0800_FFFF)                   # ISENABLER0: SGIs, PPI 27
        boot += r(v, base + 0x10418, 1, 0xA0A0)                        # IPRIORITYR
    boot += d(0, 0x104, 2, 0x3)                                        # ISENABLER1: SPIs 32, 33
    boot += inject_ppi(0, 27) + flush(0) + ack(0) + eoi(0) + exit_(0)
    boot += spi_level(33, 1) + flush(1) + ack(1) + spi_level(33, 0) + eoi(1) + exit_(1)
    # SGI 1 from vCPU 0 to vCPU 1 (ICC_SGI1R_EL1: INTID [27:24], TargetList [15:0]).
    boot += sgi_v3(0, (1 << 24) | 0b10) + flush(1) + ack(1) + eoi(1) + exit_(1)
    boot += map_hw(0, 27, 27, 0) + inject_ppi(0, 27) + flush(0) + ack(0) + eoi(0) + exit_(0)
    # More pending than LRs: UIE, maintenance, refill.
    for i in range(16):
        boot += sgi_v3(0, (i << 24) | 1)
    boot += flush(0) + ack(0) + eoi(0) + ack(0) + eoi(0) + ack(0) + eoi(0) + maint(0)
    boot += d(0, 0x204, 2, 0x2) + d(0, 0x304, 2, 0x1) + d(0, 0x204, 2) + reset(0)
    put("vgic_v3", "linux-boot", boot)
    # An EOI-maintenance level SPI: pending and active at once, handled by maintenance.
    lvl = bytes([0, 1, 0]) + d(0, 0x0, 2, 0x12) + d(0, 0x104, 2, 1) + d(0, 0x6100, 3, 0)
    lvl += spi_level(32, 1) + flush(0) + ack(0) + d(0, 0x204, 2, 1) + flush(0) + eoi(0)
    lvl += maint(0) + exit_(0) + spi_level(32, 0) + flush(0)
    put("vgic_v3", "level-spi", lvl)

    # GICv2, 2 vCPUs, 32 SPIs, 4 LRs: gic_dist_init, ITARGETSR, GICD_SGIR, priorities.
    v2 = bytes([1, 1, 3])
    v2 += mmio(0, 0x0, 2, 0) + mmio(0, 0x4, 2) + mmio(0, 0x800, 2) + mmio(0, 0x820, 2, 0x0101_0101)
    v2 += mmio(0, 0xC08, 2, 0) + mmio(0, 0x420, 2, 0xA0A0_A0A0) + mmio(0, 0x180, 2, 0xFFFF_0000)
    v2 += mmio(0, 0x100, 2, 0x0800_FFFF) + mmio(1, 0x100, 2, 0x0800_FFFF) + mmio(0, 0x104, 2, 1)
    v2 += mmio(0, 0x0, 2, 1) + mmio(0, 0x820, 0, 2) + mmio(1, 0x820, 0)
    v2 += mmio(0, 0xF00, 2, (0b10 << 16) | 3) + flush(1) + ack(1) + eoi(1) + exit_(1)
    v2 += mmio(1, 0xF00, 2, (1 << 24) | 5) + flush(0) + ack(0) + eoi(0)
    v2 += mmio(0, 0xF10, 2, 0) + mmio(0, 0xF20, 0, 1) + mmio(0, 0xF10, 2)
    v2 += inject_ppi(1, 27) + spi_level(32, 1) + flush(0) + flush(1) + ack(0) + ack(1)
    v2 += spi_level(32, 0) + eoi(0) + eoi(1) + maint(0) + maint(1) + exit_(0) + reset(1)
    put("vgic_v2", "linux-boot", v2)


# virtio operations (fuzz/src/harness.rs `virtio`): a mode byte (bit 0: Linux-like start-up of
# all three devices, bit 1: read-only disk, bit 2: no EVENT_IDX, bit 3: port B without
# GUEST_TSO4), then ops of a tag byte and a device byte. Queues (qsel): 0 blk, 1 net A rx,
# 2 net A tx, 3 net B rx, 4 net B tx; VM 0 holds blk and net A, VM 1 net B.
VQ_RAM_OFF_DATA = 0x8000


def vq_mem(vm, off, data):
    out = b""
    for i in range(0, len(data), 31):
        chunk = data[i:i + 31]
        out += bytes([2, vm]) + struct.pack("<HB", (off + i) // 4, len(chunk)) + chunk
    return out


def vq_desc(qsel, i, off, length, flags, nxt):
    return bytes([3, 0, qsel, i, 0]) + struct.pack("<IIHH", off, length, flags, nxt)


def vq_publish(qsel, head):
    return bytes([4, 0, qsel]) + struct.pack("<H", head)


def vq_reg(dev, off, value):
    return bytes([0, dev]) + struct.pack("<H", off) + bytes([2]) + struct.pack("<I", value)


def seeds_virtio():
    # A virtio-blk read of two sectors: header, data, status in three descriptors.
    hdr = struct.pack("<IIQ", 0, 0, 2)
    rd = bytes([1]) + vq_mem(0, 0x8000, hdr)
    rd += vq_desc(0, 0, 0x8000, 16, 1, 1) + vq_desc(0, 1, 0x9000, 1024, 3, 2)
    rd += vq_desc(0, 2, 0xA000, 1, 2, 0) + vq_publish(0, 0)
    # and a write of one sector (refused on a read-only disk).
    rd += vq_mem(0, 0x8000, struct.pack("<IIQ", 1, 0, 5))
    rd += vq_desc(0, 3, 0x8000, 16, 1, 4) + vq_desc(0, 4, 0x9000, 512, 1, 5)
    rd += vq_desc(0, 5, 0xA000, 1, 2, 0) + vq_publish(0, 3)
    put("virtio", "linux-blk-read-write", rd)
    put("virtio", "linux-blk-read-only", bytes([3]) + rd[1:])
    # One 23-sector read chain named by all 16 available slots (the rings are zeroed, so
    # every slot holds head 0), then one notification: the disk serves one data budget per
    # pass and defers the rest, finished by the passes after the following register reads.
    big = bytes([1]) + vq_mem(0, 0x8000, struct.pack("<IIQ", 0, 0, 0))
    big += vq_desc(0, 0, 0x8000, 16, 1, 1) + vq_desc(0, 1, 0x9000, 23 * 512, 3, 2)
    big += vq_desc(0, 2, 0xC000, 1, 2, 0)
    big += bytes([6, 0, 0]) + struct.pack("<H", 16) + bytes([5, 0, 0])
    big += (bytes([1, 0]) + struct.pack("<H", 0x70) + bytes([2])) * 16
    put("virtio", "blk-one-chain-in-every-slot", big)
    # A broadcast ARP-sized frame from VM 0 to VM 1, with B's receive buffers posted first.
    frame = b"\x00" * 12 + b"\xff" * 6 + bytes([2, 0, 0, 0, 0, 1]) + b"\x08\x06" + bytes(range(46))
    net = bytes([1])
    for i in range(4):
        net += vq_desc(3, i, 0x10000 + i * 0x1000, 2048, 2, 0) + vq_publish(3, i)
    net += vq_mem(0, 0x8000, frame) + vq_desc(2, 0, 0x8000, len(frame), 0, 0) + vq_publish(2, 0)
    # A TSO segment with a partial checksum, split over two descriptors.
    tso = struct.pack("<BBHHHHH", 1, 1, 54, 1448, 34, 16, 0) + frame[12:] + bytes(3000)
    net += vq_mem(0, 0x20000, tso[:200])
    net += vq_desc(2, 1, 0x20000, 100, 1, 2) + vq_desc(2, 2, 0x20064, len(tso) - 100, 0, 0)
    net += vq_publish(2, 1)
    put("virtio", "linux-net-frames", net)
    put("virtio", "linux-net-no-event-idx-no-tso", bytes([1 | 4 | 8]) + net[1:])
    # Raw register traffic with no start-up: status dance, features, queue set-up.
    raw = bytes([0])
    for dev in range(3):
        raw += vq_reg(dev, 0x70, 1) + vq_reg(dev, 0x70, 3) + vq_reg(dev, 0x24, 1)
        raw += vq_reg(dev, 0x20, 1) + vq_reg(dev, 0x70, 0xB) + vq_reg(dev, 0x38, 8)
        raw += vq_reg(dev, 0x80, 0x4000_1000) + vq_reg(dev, 0x90, 0x4000_1080)
        raw += vq_reg(dev, 0xA0, 0x4000_1100) + vq_reg(dev, 0x44, 1) + vq_reg(dev, 0x70, 0xF)
        raw += vq_reg(dev, 0x50, 0) + vq_reg(dev, 0x64, 3) + vq_reg(dev, 0x70, 0)
    put("virtio", "raw-registers", raw)


def main():
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    seeds_cpio_gzip_ramdisk_image_config()
    seeds_platform()
    seeds_esr()
    seeds_pl011()
    seeds_vgic()
    seeds_vgic_cpu_off()
    seeds_virtio()


if __name__ == "__main__":
    main()
