/*
 * kestrel boot stub.
 *
 * The image starts with an arm64 Linux Image header (Documentation/arch/arm64/booting.rst), so
 * QEMU's -kernel and the Raspberry Pi firmware load it like a kernel: at a 2 MiB-aligned base
 * (flags bit 3: anywhere in RAM), MMU off, x0 = physical address of the DTB, normally at EL2.
 *
 * The image is linked at 0 and position independent; this stub puts CPU 0 on its stack, zeroes
 * TPIDR_EL2 (UNKNOWN at reset; Rust reads it for the CPU number), installs the early exception
 * vectors, applies its R_AARCH64_RELATIVE relocations, clears .bss and calls Rust. Secondary CPUs
 * enter at kestrel_secondary_entry (PSCI CPU_ON or the spin table) with x0 = their CPU index, do
 * the same first steps, switch the MMU on with the primary's tables *before* touching memory, and
 * call Rust.
 *
 * The early vectors (kestrel_early_vectors) stay installed until the console is up: whatever
 * goes wrong before that, with the MMU off or on, is reported by kestrel_early_exception on the
 * early UART (src/arch/aarch64/early_uart.rs) with its syndrome, instead of silence.
 *
 * Constants come from Rust (global_asm! operands): STACK_SIZE, FRAME_SIZE, MAX_CPUS.
 * Note: no curly braces in this file, it goes through format_args-style substitution.
 */
    .section .text.head, "ax"
    .global _start
_start:
    b       primary_entry               /* code0 */
    .long   0                           /* code1 */
    .quad   0                           /* text_offset */
    .quad   __image_size                /* image_size, bss and stacks included */
    .quad   0xa                         /* flags: little endian, 4 KiB pages, any 2 MiB base */
    .quad   0                           /* res2 */
    .quad   0                           /* res3 */
    .quad   0                           /* res4 */
    .ascii  "ARM\x64"                   /* magic */
    .long   0                           /* res5 */

    .section .text.boot, "ax"
primary_entry:
    msr     daifset, #0xf
    mov     x19, x0                     /* DTB */
    adr     x20, _start                 /* where we were loaded */
    mrs     x21, CurrentEL
    lsr     x21, x21, #2
    cmp     x21, #3
    b.ne    1f

    /* EL3 (no firmware in front of us): become non-secure EL2, AArch64, as TF-A would. */
    mov     x0, #0x30                   /* SCR_EL3 RES1 [5:4] */
    orr     x0, x0, #(1 << 0)           /* NS */
    orr     x0, x0, #(1 << 8)           /* HCE: HVC enabled */
    orr     x0, x0, #(1 << 10)          /* RW: EL2 is AArch64 */
    msr     scr_el3, x0
    msr     cptr_el3, xzr               /* no FP/SIMD traps to EL3 */
    mov     x0, #0x3c9                  /* EL2h, DAIF masked */
    msr     spsr_el3, x0
    adr     x0, 2f
    msr     elr_el3, x0
    eret
2:  mov     x21, #3                     /* tell Rust we came down from EL3 */
    orr     x21, x21, #(1 << 8)
1:
    /* CPU 0's stack: the guest register frame sits at its top, Rust runs below it. The stacks
     * are neither relocated nor cleared, so they can be used at once. */
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    mov     x2, #{STACK_SIZE}
    add     x1, x1, x2
    sub     sp, x1, #{FRAME_SIZE}
    mrs     x1, CurrentEL
    cmp     x1, #(2 << 2)
    b.ne    3f                          /* EL1: no EL2 registers; Rust says so and stops */
    msr     tpidr_el2, xzr
    adrp    x1, kestrel_early_vectors
    add     x1, x1, :lo12:kestrel_early_vectors
    msr     vbar_el2, x1
    isb
3:
    /* Apply our own relocations: *(base + r_offset) = base + r_addend. */
    adrp    x1, __rela_start
    add     x1, x1, :lo12:__rela_start
    adrp    x2, __rela_end
    add     x2, x2, :lo12:__rela_end
13: cmp     x1, x2
    b.hs    4f
    ldp     x3, x4, [x1], #16           /* r_offset, r_info */
    ldr     x5, [x1], #8                /* r_addend */
    cmp     w4, #1027                   /* R_AARCH64_RELATIVE */
    b.ne    13b
    add     x5, x5, x20
    str     x5, [x20, x3]
    b       13b
4:
    /* Clear .bss (the stacks are not part of it: nothing needs them zeroed). */
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
5:  cmp     x1, x2
    b.hs    6f
    stp     xzr, xzr, [x1], #16
    b       5b
6:
    mov     x29, xzr
    mov     x30, xzr
    mov     x0, x19
    mov     x1, x20
    mov     x2, x21
    bl      kestrel_primary_early
7:  wfe
    b       7b

/*
 * Secondary CPUs. x0 = CPU index (PSCI context id or written by the spin-table release).
 * kestrel_secondary_boot holds MAIR, TCR, TTBR0, SCTLR for EL2, cleaned to the point of
 * coherency by the primary, so these non-cacheable loads see them.
 */
    .global kestrel_secondary_entry
kestrel_secondary_entry:
    msr     daifset, #0xf
    msr     tpidr_el2, xzr
    adrp    x1, kestrel_early_vectors
    add     x1, x1, :lo12:kestrel_early_vectors
    msr     vbar_el2, x1
    isb
    mov     x19, x0
    cmp     x19, #{MAX_CPUS}
    b.hs    9f
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    mov     x2, #{STACK_SIZE}
    madd    x1, x19, x2, x1
    add     x1, x1, x2
    sub     sp, x1, #{FRAME_SIZE}
    adrp    x1, kestrel_secondary_boot
    add     x1, x1, :lo12:kestrel_secondary_boot
    ldp     x2, x3, [x1]
    ldp     x4, x5, [x1, #16]
    ldr     x6, [x1, #32]
    msr     mair_el2, x2
    msr     tcr_el2, x3
    msr     ttbr0_el2, x4
    msr     hcr_el2, x6
    isb
    tlbi    alle2
    ic      iallu
    dsb     nsh
    isb
    msr     sctlr_el2, x5
    isb
    mov     x29, xzr
    mov     x30, xzr
    mov     x0, x19
    bl      kestrel_secondary_main
9:  wfe
    b       9b

/*
 * Spin-table secondaries (Raspberry Pi 4 armstub8, QEMU raspi4b's stub at 0x300): the release
 * branches here at EL2, MMU off, with x0 = 0 instead of the CPU index. Look the CPU's MPIDR
 * affinity up in kestrel_spin_handoff, MAX_CPUS slots of (affinity, context) that the primary
 * fills and cleans to the point of coherency before the release (src/platform/spin_table.rs,
 * SpinTablePlan::prepare), and continue at kestrel_secondary_entry with x0 = the slot's context
 * (the CPU index). A CPU without a slot parks. Uses only x0-x5; no memory is written.
 */
    .global kestrel_secondary_spin_entry
kestrel_secondary_spin_entry:
    msr     daifset, #0xf
    mrs     x1, mpidr_el1
    mov     x2, #0xffffff               /* MPIDR_EL1 Aff2..Aff0 [23:0] */
    movk    x2, #0xff, lsl #32          /* and Aff3 [39:32]; not U, MT, RES1 */
    and     x1, x1, x2
    adrp    x2, kestrel_spin_handoff
    add     x2, x2, :lo12:kestrel_spin_handoff
    mov     x3, #{MAX_CPUS}
10: cbz     x3, 12f
    ldp     x4, x5, [x2], #16           /* affinity, context */
    sub     x3, x3, #1
    cmp     x4, x1
    b.ne    10b
    mov     x0, x5
    b       kestrel_secondary_entry
12: wfe
    b       12b

    /* Empty slots hold an affinity no CPU has (all ones). */
    .section .data, "aw"
    .balign 64
    .global kestrel_spin_handoff
kestrel_spin_handoff:
    .rept   {MAX_CPUS}
    .quad   -1, 0
    .endr
    .section .text.boot, "ax"

/*
 * Early exception vectors (VBAR_EL2 from the first instructions until the console is up). Every
 * entry records which of the 16 it is (the numbering of vectors.S: 0-3 lower EL, +4 current EL
 * with SP_EL0, +8 with SP_ELx, +12 lower EL AArch32) and reports ESR, ELR, FAR and SPSR through
 * kestrel_early_exception, which prints them raw on the early UART and halts. It runs on a
 * stack of its own (1 KiB per MPIDR Aff0 mod 16, in .bss), since the faulting code's stack may
 * be the cause; it touches no other memory, so it works with the MMU off.
 */
    .macro EARLY_ENTRY kind
    .balign 0x80
    mov     x0, #\kind
    b       early_exception_common
    .endm

    .balign 0x800
    .global kestrel_early_vectors
kestrel_early_vectors:
    EARLY_ENTRY 4
    EARLY_ENTRY 5
    EARLY_ENTRY 6
    EARLY_ENTRY 7
    EARLY_ENTRY 8
    EARLY_ENTRY 9
    EARLY_ENTRY 10
    EARLY_ENTRY 11
    EARLY_ENTRY 0
    EARLY_ENTRY 1
    EARLY_ENTRY 2
    EARLY_ENTRY 3
    EARLY_ENTRY 12
    EARLY_ENTRY 13
    EARLY_ENTRY 14
    EARLY_ENTRY 15

early_exception_common:
    mrs     x1, esr_el2
    mrs     x2, elr_el2
    mrs     x3, far_el2
    mrs     x4, spsr_el2
    mrs     x5, mpidr_el1
    and     x5, x5, #0xf
    add     x5, x5, #1
    adrp    x6, kestrel_early_exception_stacks
    add     x6, x6, :lo12:kestrel_early_exception_stacks
    add     x6, x6, x5, lsl #10
    mov     sp, x6
    mov     x29, xzr
    mov     x30, xzr
    bl      kestrel_early_exception
14: wfe
    b       14b

    .section .bss.early_exception_stacks, "aw", @nobits
    .balign 16
kestrel_early_exception_stacks:
    .skip   16 * 1024
    .section .text.boot, "ax"
