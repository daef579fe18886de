/*
 * A Raspberry Pi 4-style armstub for QEMU `virt` (secure=on, virtualization=on, gic-version=2):
 * the code that runs at Secure EL3 before kestrel and enters it the way the Pi 4 firmware does.
 * Written for kestrel's tests from the Arm ARM (DDI 0487, D1.2 and the SCR_EL3, CPTR_EL3,
 * SPSR_EL3 descriptions), the GICv2 architecture specification (IHI 0048B, 4.3 and 4.4: the
 * Secure and Non-secure views of GICD_IGROUPRn, GICD_CTLR, GICC_CTLR, GICC_PMR) and the
 * behaviour of the Raspberry Pi firmware's built-in armstub8 (`enable_gic=1`), which every Pi 4
 * runs unless config.txt names another `armstub=`.
 *
 * Every CPU starts here at EL3 (QEMU: the CPUs' reset address, rvbar, is this copy in RAM, as
 * the Pi 4's cores start at address 0 where the firmware put its stub). Each CPU:
 *   - sets CNTFRQ_EL0 (only EL3 can) and CNTVOFF_EL2 = 0;
 *   - lets FP/SIMD through to the lower ELs (CPTR_EL3 = 0);
 *   - sets SCR_EL3: NS (lower ELs are Non-secure), HCE (HVC enabled), RW (EL2 is AArch64), SMD
 *     (SMC is UNDEFINED below EL3: there is no monitor, as on the Pi), RES1 bits 5:4;
 *   - sets ACTLR_EL3 so that EL2 may reach the Cortex-A72's implementation-defined control
 *     registers, and CPUECTLR_EL1.SMPEN (coherency, needed before the caches are on);
 *   - configures the GIC from the Secure side, which only Secure software can do: every
 *     interrupt of GICD_IGROUPRn (SGIs and PPIs banked per CPU, then the SPIs) Group 1, i.e.
 *     Non-secure, so the hypervisor sees and controls them; the distributor's Group 0 and 1
 *     enabled (GICD_CTLR = 3); this CPU interface's groups enabled with the Secure GICC_CTLR
 *     value the Pi uses (0x1e7) and the priority mask fully open (GICC_PMR = 0xff). Priorities
 *     themselves are left at reset, as the Pi's stub does;
 *   - sets SCTLR_EL2 to its RES1 bits (MMU and caches off), poisons TPIDR_EL2 and VBAR_EL2
 *     (UNKNOWN at reset on hardware, zero under QEMU) and drops to EL2h, DAIF masked.
 * Then, at Non-secure EL2, CPU 0 branches to the kernel with x0 = the DTB, x1 = x2 = x3 = 0;
 * CPUs 1-3 wait in WFE on their spin-table word (spin_cpuN) and, once it is non-zero, branch
 * there with x0 = 0, still at EL2, MMU off. CPUs with Aff0 >= 4 park for good.
 *
 * Layout (the Pi's, so the DTB's cpu-release-addr values are base + 0xe0, 0xe8, 0xf0):
 *   0xd0  cntfrq_hz       counter frequency to program (the Pi: 54 MHz crystal)
 *   0xd4  stub_flags      bit 0: skip the GIC set-up, as a firmware with enable_gic=0 or an
 *                         armstub without GIC support would (a test of kestrel's diagnosis)
 *   0xd8  spin_cpu0..3    the spin table, 8 bytes per CPU
 *   0xf8  dtb_ptr32       the DTB's address
 *   0xfc  kernel_entry32  the kernel's entry
 * The parameter words are zero here; tests/firmware/prepare.sh writes them into the
 * binary, as the Pi firmware does after loading its stub. The whole stub (the spin table
 * included) must lie in memory the DTB reserves (/memreserve/).
 *
 * Built by tests/firmware/prepare.sh (rustc's assembler through global_asm!, rust-lld; no C
 * preprocessor): position independent, no literal pool.
 */

/* QEMU virt's GICv2 (hw/arm/virt.c, VIRT_GIC_DIST and VIRT_GIC_CPU). */
    .equ    GICD_BASE, 0x08000000
    .equ    GICC_BASE, 0x08010000
    .equ    GICD_CTLR, 0x000
    .equ    GICD_TYPER, 0x004
    .equ    GICD_IGROUPR, 0x080
    .equ    GICC_CTLR, 0x000
    .equ    GICC_PMR, 0x004

    .equ    SCR_NS, (1 << 0)
    .equ    SCR_RES1, (3 << 4)
    .equ    SCR_SMD, (1 << 7)
    .equ    SCR_HCE, (1 << 8)
    .equ    SCR_RW, (1 << 10)
    .equ    SCR_VAL, (SCR_RW | SCR_HCE | SCR_SMD | SCR_RES1 | SCR_NS)

/* ACTLR_EL3 (Cortex-A72 TRM 4.3.2): EL2 may access CPUACTLR, CPUECTLR, L2CTLR, L2ECTLR,
 * L2ACTLR. */
    .equ    ACTLR_VAL, ((1 << 0) | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 6))
    .equ    CPUECTLR_SMPEN, (1 << 6)

/* SPSR_EL3: EL2h with D, A, I, F masked. */
    .equ    SPSR_EL2H, 0x3c9
/* SCTLR_EL2 RES1 bits (non-VHE layout): LE, MMU, caches and alignment checks off. */
    .equ    SCTLR_EL2_RES1, 0x30c50830

    .text
    .globl _start
_start:
    ldr     w0, cntfrq_hz
    msr     cntfrq_el0, x0
    msr     cntvoff_el2, xzr
    msr     cptr_el3, xzr
    mov     x0, #SCR_VAL
    msr     scr_el3, x0
    mov     x0, #ACTLR_VAL
    msr     actlr_el3, x0
    mov     x0, #CPUECTLR_SMPEN
    msr     s3_1_c15_c2_1, x0           /* CPUECTLR_EL1 */
    ldr     w0, stub_flags
    tbnz    w0, #0, 1f                  /* flag 0: leave the GIC to the Secure world */
    bl      setup_gic
1:
    movz    x0, #(SCTLR_EL2_RES1 >> 16), lsl #16
    movk    x0, #(SCTLR_EL2_RES1 & 0xffff)
    msr     sctlr_el2, x0
    /* EL2 registers whose reset value is UNKNOWN and that no firmware sets: give them a value no
     * kernel may rely on (QEMU resets them to 0, real hardware need not). */
    movz    x0, #0xdead, lsl #48
    movk    x0, #0xbad0
    msr     tpidr_el2, x0
    msr     vbar_el2, x0
    mov     x0, #SPSR_EL2H
    msr     spsr_el3, x0
    adr     x0, in_el2
    msr     elr_el3, x0
    eret

in_el2:
    mrs     x6, mpidr_el1
    and     x6, x6, #0xff               /* Aff0: the core number */
    cbz     x6, primary
    cmp     x6, #4
    b.hs    park
    adr     x5, spin_cpu0
secondary_spin:
    wfe
    ldr     x4, [x5, x6, lsl #3]
    cbz     x4, secondary_spin
    mov     x0, #0
    b       boot_kernel
primary:
    ldr     w4, kernel_entry32
    ldr     w0, dtb_ptr32
boot_kernel:
    mov     x1, #0
    mov     x2, #0
    mov     x3, #0
    br      x4
park:
    wfe
    b       park

    .org    0xd0
cntfrq_hz:
    .word   0
stub_flags:
    .word   0
    .org    0xd8
    .globl  spin_cpu0
spin_cpu0:
    .quad   0, 0, 0, 0
    .org    0xf8
dtb_ptr32:
    .word   0
kernel_entry32:
    .word   0

    .org    0x100
/*
 * From Secure EL3: all interrupts Group 1 (Non-secure), both groups enabled at the
 * distributor and at this CPU's interface, priority mask open. GICD_IGROUPR0 (SGIs, PPIs) is
 * banked per CPU, so every CPU runs this; the other registers are written by each CPU too
 * (same values). GICD_TYPER.ITLinesNumber + 1 registers of 32 interrupts each exist.
 */
setup_gic:
    movz    x2, #(GICD_BASE >> 16), lsl #16
    ldr     w0, [x2, #GICD_TYPER]
    and     w0, w0, #0x1f
    add     w0, w0, #1                  /* number of GICD_IGROUPRn registers */
    add     x1, x2, #GICD_IGROUPR
    mov     w3, #0xffffffff
1:  str     w3, [x1], #4
    subs    w0, w0, #1
    b.ne    1b
    mov     w0, #3                      /* EnableGrp0 | EnableGrp1 */
    str     w0, [x2, #GICD_CTLR]
    movz    x1, #(GICC_BASE >> 16), lsl #16
    mov     w0, #0x1e7                  /* EnableGrp0/1, AckCtl, bypass disabled */
    str     w0, [x1, #GICC_CTLR]
    mov     w0, #0xff
    str     w0, [x1, #GICC_PMR]
    ret
