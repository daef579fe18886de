/*
 * EL2 exception vectors (Arm ARM D1.10.2: VBAR_EL2, 16 entries of 0x80 bytes).
 *
 * Lower EL (the guest, AArch64): while a guest runs, SP_EL2 points at the guest register frame
 * at the top of this CPU's stack: x0-x30 at 0..248, ELR_EL2 (pc) at 248, SPSR_EL2 at 256. The
 * entry stores the guest's registers straight into that frame, calls
 * kestrel_guest_exit(frame, kind) with the Rust stack growing down below the frame, and on
 * return restores the frame and erets. EL1 system registers are not touched: each physical CPU
 * runs one vCPU, so they stay live in hardware (docs/design.md).
 *
 * Current EL (a fault in the hypervisor itself): the registers go into a frame pushed on the
 * current stack and kestrel_hyp_exception(frame, kind) prints a report and halts this CPU.
 * It returns only for an exception it fixed up (the AT of stage2_hw::translate_guest_va):
 * then the frame, with its new pc, is restored and popped, and the hypervisor resumes.
 *
 * kind: 0 sync, 1 irq, 2 fiq, 3 serror; +4 current EL with SP_EL0, +8 current EL with SP_ELx,
 * +12 lower EL AArch32.
 */
    .macro SAVE_GUEST_REST
    stp     x2, x3, [sp, #16 * 1]
    stp     x4, x5, [sp, #16 * 2]
    stp     x6, x7, [sp, #16 * 3]
    stp     x8, x9, [sp, #16 * 4]
    stp     x10, x11, [sp, #16 * 5]
    stp     x12, x13, [sp, #16 * 6]
    stp     x14, x15, [sp, #16 * 7]
    stp     x16, x17, [sp, #16 * 8]
    stp     x18, x19, [sp, #16 * 9]
    stp     x20, x21, [sp, #16 * 10]
    stp     x22, x23, [sp, #16 * 11]
    stp     x24, x25, [sp, #16 * 12]
    stp     x26, x27, [sp, #16 * 13]
    stp     x28, x29, [sp, #16 * 14]
    mrs     x2, elr_el2
    mrs     x3, spsr_el2
    stp     x30, x2, [sp, #16 * 15]
    str     x3, [sp, #16 * 16]
    .endm

    .macro LOWER_ENTRY kind
    .balign 0x80
    stp     x0, x1, [sp]
    mov     x1, #\kind
    b       guest_exit_common
    .endm

    .macro HYP_ENTRY kind
    .balign 0x80
    sub     sp, sp, #{FRAME_SIZE}
    stp     x0, x1, [sp]
    mov     x1, #\kind
    b       hyp_exception_common
    .endm

    .section .text.vectors, "ax"
    .balign 0x800
    .global kestrel_vectors
kestrel_vectors:
    HYP_ENTRY 4
    HYP_ENTRY 5
    HYP_ENTRY 6
    HYP_ENTRY 7
    HYP_ENTRY 8
    HYP_ENTRY 9
    HYP_ENTRY 10
    HYP_ENTRY 11
    LOWER_ENTRY 0
    LOWER_ENTRY 1
    LOWER_ENTRY 2
    LOWER_ENTRY 3
    HYP_ENTRY 12
    HYP_ENTRY 13
    HYP_ENTRY 14
    HYP_ENTRY 15

guest_exit_common:
    SAVE_GUEST_REST
    mov     x0, sp
    mov     x29, xzr
    bl      kestrel_guest_exit
    mov     x0, sp
    /* fall through: resume the guest from the (possibly updated) frame */

/* kestrel_guest_resume(frame): also the first entry into a vCPU (frame at the stack top). */
    .global kestrel_guest_resume
kestrel_guest_resume:
    mov     sp, x0
    ldp     x0, x1, [sp, #16 * 15 + 8]   /* pc, pstate */
    msr     elr_el2, x0
    msr     spsr_el2, x1
    ldp     x0, x1, [sp, #16 * 0]
    ldp     x2, x3, [sp, #16 * 1]
    ldp     x4, x5, [sp, #16 * 2]
    ldp     x6, x7, [sp, #16 * 3]
    ldp     x8, x9, [sp, #16 * 4]
    ldp     x10, x11, [sp, #16 * 5]
    ldp     x12, x13, [sp, #16 * 6]
    ldp     x14, x15, [sp, #16 * 7]
    ldp     x16, x17, [sp, #16 * 8]
    ldp     x18, x19, [sp, #16 * 9]
    ldp     x20, x21, [sp, #16 * 10]
    ldp     x22, x23, [sp, #16 * 11]
    ldp     x24, x25, [sp, #16 * 12]
    ldp     x26, x27, [sp, #16 * 13]
    ldp     x28, x29, [sp, #16 * 14]
    ldr     x30, [sp, #16 * 15]
    eret
    dsb     nsh                         /* speculation barrier after eret */
    isb

hyp_exception_common:
    SAVE_GUEST_REST
    mov     x0, sp
    bl      kestrel_hyp_exception
    ldp     x0, x1, [sp, #16 * 15 + 8]   /* pc, pstate */
    msr     elr_el2, x0
    msr     spsr_el2, x1
    ldp     x0, x1, [sp, #16 * 0]
    ldp     x2, x3, [sp, #16 * 1]
    ldp     x4, x5, [sp, #16 * 2]
    ldp     x6, x7, [sp, #16 * 3]
    ldp     x8, x9, [sp, #16 * 4]
    ldp     x10, x11, [sp, #16 * 5]
    ldp     x12, x13, [sp, #16 * 6]
    ldp     x14, x15, [sp, #16 * 7]
    ldp     x16, x17, [sp, #16 * 8]
    ldp     x18, x19, [sp, #16 * 9]
    ldp     x20, x21, [sp, #16 * 10]
    ldp     x22, x23, [sp, #16 * 11]
    ldp     x24, x25, [sp, #16 * 12]
    ldp     x26, x27, [sp, #16 * 13]
    ldp     x28, x29, [sp, #16 * 14]
    ldr     x30, [sp, #16 * 15]
    add     sp, sp, #{FRAME_SIZE}
    eret

/* kestrel_idle_on_stack(sp): abandon the current stack and run the idle loop. */
    .global kestrel_idle_on_stack
kestrel_idle_on_stack:
    mov     sp, x0
    mov     x29, xzr
    mov     x30, xzr
    b       kestrel_idle

/*
 * kestrel_copy_bulk(dst, src, len): copies len bytes, len a multiple of 64, with 16-byte
 * loads and stores (the compiler's memcpy for this soft-float target moves 8 bytes at a time).
 * Used to load guest images, where it is most of the hypervisor's work before a guest starts.
 */
    .global kestrel_copy_bulk
kestrel_copy_bulk:
    cbz     x2, 2f
1:  ldp     x3, x4, [x1]
    ldp     x5, x6, [x1, #16]
    ldp     x7, x8, [x1, #32]
    ldp     x9, x10, [x1, #48]
    stp     x3, x4, [x0]
    stp     x5, x6, [x0, #16]
    stp     x7, x8, [x0, #32]
    stp     x9, x10, [x0, #48]
    add     x1, x1, #64
    add     x0, x0, #64
    subs    x2, x2, #64
    b.hi    1b
2:  ret
