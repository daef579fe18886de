/*
 * bench-exit-profile: a QEMU TCG plugin that counts the instructions the hypervisor executes,
 * split into "exits" (each maximal run of hypervisor instructions between two guest
 * instructions on one vCPU), attributed to the guest translation block (TB) that ran just
 * before (the trigger: the TB holding the trapping instruction, or the one interrupted).
 *
 * Built and used by qemu/bench.sh (see docs/benchmarks.md):
 *
 *   gcc -O2 -shared -fPIC -o bench-exit-profile.so benches/bench-exit-profile.c
 *   qemu-system-aarch64 ... -plugin ./bench-exit-profile.so,hv_start=0x40200000,\
 *       hv_end=0x40299000,out=prof.txt[,pairs=on]
 *
 * Arguments:
 *   hv_start, hv_end   the virtual address range of the hypervisor's code (kestrel runs with an
 *                      identity map, so its load address: 0x40200000 on QEMU virt)
 *   out                file the results are written to at exit (default: QEMU's log)
 *   pairs=on           also count each hypervisor instruction per trigger (up to MAX_CLASSES
 *                      triggers get their own histogram; the rest share class "other")
 *   stop_mark=K        stop counting at the K-th marker (see below): every figure then covers
 *                      the run up to that point only
 *
 * The first exit of each vCPU (the hypervisor's own start-up on that CPU, up to the first guest
 * instruction it runs; on CPU 0 after QEMU's few-instruction boot stub) is attributed to the
 * trigger "none".
 *
 * Markers: each execution of the instruction `hint #0x7f` (a NOP; qemu/bench.sh's stamp program
 * executes it first) records a snapshot of the counters, printed as a `mark` line. Guest
 * instructions (any code outside the range) are counted per TB, so a snapshot includes the
 * whole TB holding the marker.
 *
 * Exactness: hypervisor instructions are counted by a callback per executed instruction, so a
 * TB left early (exception, or QEMU's re-execution of a TB ending at an I/O access under
 * icount, whose second run carries memory callbacks only) is counted exactly. Guest
 * instructions are counted per TB (the whole TB when it starts), i.e. approximately.
 *
 * Output lines (all numbers decimal except addresses):
 *   hv_range <start> <end>
 *   totals hv_insns=<n> guest_insns_approx=<n> exits=<n> open_exits=<n>
 *   trigger <guest-tb-vaddr|none> class=<c|-> first=<seq> exits=<n> hv_insns=<n> min=<n> max=<n> disas=<text>
 *   pc <class|all> <hv-pc> <count>
 *   mark <k> vcpu=<i> hv_insns=<n> guest_insns_approx=<n> exits=<n>
 *
 * Only the few plugin API functions used here are declared, with the signatures of QEMU's
 * include/qemu/qemu-plugin.h (API version 4, QEMU 10.0; unchanged since version 1).
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn,
                                            qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
char *qemu_plugin_insn_disas(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);

__attribute__((visibility("default"))) int qemu_plugin_version = 4;

#define MAX_VCPUS 64
#define MAX_CLASSES 64
#define TRIGGER_SLOTS (1u << 16) /* open addressing; distinct trigger TB addresses */
#define DISAS_LEN 96
#define MAX_MARKS 64
#define MARKER "hint #0x7f"

/* One translation of a guest TB (a TB may be translated several times). */
struct gtb {
    uint64_t vaddr;
    uint32_t n;
    char disas[DISAS_LEN];
};

struct trigger {
    uint64_t vaddr; /* 0: the slot is free; ~0: "none" (no guest instruction yet) */
    uint64_t first; /* sequence number of its first exit */
    uint64_t exits, insns, min, max;
    int cls;        /* histogram class, -1 if none */
    char disas[DISAS_LEN];
};

struct vcpu {
    bool in_hv;
    bool hv_seen;           /* has run hypervisor code */
    const struct gtb *last; /* guest TB that ran last */
    struct trigger *cur_trigger;
    uint64_t cur;           /* instructions of the exit in progress */
};

static uint64_t hv_start, hv_end;
static bool pairs, stopped;
static long stop_mark;
static const char *out_path;
static struct vcpu vcpus[MAX_VCPUS];
static struct trigger *triggers;
static struct trigger none_trigger = {.vaddr = ~0ull, .cls = -1, .min = ~0ull, .disas = "-"};
static uint64_t *hist_all;               /* per hypervisor instruction slot */
static uint64_t *hist_cls[MAX_CLASSES + 1]; /* [MAX_CLASSES] = other */
static int n_classes;
static uint64_t n_slots, hv_insns, guest_insns, exits, seq;
static struct mark {
    unsigned int vcpu;
    uint64_t hv_insns, guest_insns, exits;
} marks[MAX_MARKS];
static int n_marks;

static struct trigger *trigger_for(const struct gtb *g)
{
    if (!g) {
        return &none_trigger;
    }
    uint64_t h = (g->vaddr >> 2) * 0x9e3779b97f4a7c15ull;
    for (uint32_t i = 0; i < TRIGGER_SLOTS; i++) {
        struct trigger *t = &triggers[(h + i) & (TRIGGER_SLOTS - 1)];
        if (t->vaddr == g->vaddr) {
            return t;
        }
        if (t->vaddr == 0) {
            t->vaddr = g->vaddr;
            t->min = ~0ull;
            t->cls = -1;
            t->first = seq;
            snprintf(t->disas, sizeof t->disas, "%s", g->disas);
            return t;
        }
    }
    return &none_trigger; /* table full: lumped with "none" */
}

static void end_exit(struct vcpu *v)
{
    struct trigger *t = v->cur_trigger;
    t->exits++;
    t->insns += v->cur;
    if (v->cur < t->min) {
        t->min = v->cur;
    }
    if (v->cur > t->max) {
        t->max = v->cur;
    }
    exits++;
    v->in_hv = false;
}

static void guest_tb_exec(unsigned int cpu, void *udata)
{
    struct vcpu *v = &vcpus[cpu % MAX_VCPUS];
    const struct gtb *g = udata;
    if (stopped) {
        return;
    }
    if (v->in_hv) {
        end_exit(v);
    }
    v->last = g;
    guest_insns += g->n;
}

static void hv_insn_exec(unsigned int cpu, void *udata)
{
    struct vcpu *v = &vcpus[cpu % MAX_VCPUS];
    uint64_t slot = (uint64_t)(uintptr_t)udata;
    if (stopped) {
        return;
    }
    if (!v->in_hv) {
        if (!v->hv_seen) {
            v->hv_seen = true;
            v->last = NULL;
        }
        v->in_hv = true;
        v->cur = 0;
        v->cur_trigger = trigger_for(v->last);
        seq++;
        struct trigger *t = v->cur_trigger;
        if (pairs && t->cls < 0) {
            t->cls = n_classes < MAX_CLASSES ? n_classes++ : MAX_CLASSES;
            if (!hist_cls[t->cls]) {
                hist_cls[t->cls] = calloc(n_slots, sizeof(uint64_t));
            }
        }
    }
    v->cur++;
    hv_insns++;
    hist_all[slot]++;
    int c = v->cur_trigger->cls;
    if (c >= 0 && hist_cls[c]) {
        hist_cls[c][slot]++;
    }
}

static void marker_exec(unsigned int cpu, void *udata)
{
    (void)udata;
    if (stopped) {
        return;
    }
    if (n_marks < MAX_MARKS) {
        marks[n_marks++] = (struct mark){cpu, hv_insns, guest_insns, exits};
    }
    if (stop_mark > 0 && n_marks >= stop_mark) {
        stopped = true;
    }
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    uint64_t va = qemu_plugin_tb_vaddr(tb);
    if (va >= hv_start && va < hv_end) {
        for (size_t i = 0; i < n; i++) {
            struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
            uint64_t pc = qemu_plugin_insn_vaddr(insn);
            if (pc < hv_start || pc >= hv_end) {
                continue;
            }
            qemu_plugin_register_vcpu_insn_exec_cb(insn, hv_insn_exec, QEMU_PLUGIN_CB_NO_REGS,
                                                   (void *)(uintptr_t)((pc - hv_start) >> 2));
        }
        return;
    }
    struct gtb *g = calloc(1, sizeof *g);
    if (!g) {
        return;
    }
    g->vaddr = va;
    g->n = (uint32_t)n;
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        char *d = qemu_plugin_insn_disas(insn);
        if (!d) {
            continue;
        }
        if (!strcmp(d, MARKER)) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, marker_exec, QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
        if (used + 1 < sizeof g->disas) {
            int w = snprintf(g->disas + used, sizeof g->disas - used, "%s%s", i ? "; " : "", d);
            if (w > 0) {
                used += (size_t)w;
            }
        }
        free(d);
    }
    /* One line per trigger in the output: no newlines or tabs. */
    for (char *p = g->disas; *p; p++) {
        if (*p == '\n' || *p == '\t') {
            *p = ' ';
        }
    }
    qemu_plugin_register_vcpu_tb_exec_cb(tb, guest_tb_exec, QEMU_PLUGIN_CB_NO_REGS, g);
}

static void put_trigger(FILE *f, const struct trigger *t)
{
    if (!t->exits) {
        return;
    }
    if (t->vaddr == ~0ull) {
        fprintf(f, "trigger none");
    } else {
        fprintf(f, "trigger 0x%" PRIx64, t->vaddr);
    }
    if (t->cls >= 0) {
        fprintf(f, " class=%d", t->cls);
    } else {
        fprintf(f, " class=-");
    }
    fprintf(f, " first=%" PRIu64 " exits=%" PRIu64 " hv_insns=%" PRIu64 " min=%" PRIu64
               " max=%" PRIu64 " disas=%s\n",
            t->first, t->exits, t->insns, t->min, t->max, t->disas);
}

static void at_exit(qemu_plugin_id_t id, void *udata)
{
    (void)id;
    (void)udata;
    uint64_t open = 0;
    for (int i = 0; i < MAX_VCPUS; i++) {
        if (vcpus[i].in_hv) {
            end_exit(&vcpus[i]);
            open++;
        }
    }
    FILE *f = out_path ? fopen(out_path, "w") : NULL;
    char *buf = NULL;
    size_t len = 0;
    if (!f) {
        f = open_memstream(&buf, &len);
        if (!f) {
            return;
        }
    }
    fprintf(f, "hv_range 0x%" PRIx64 " 0x%" PRIx64 "\n", hv_start, hv_end);
    fprintf(f, "totals hv_insns=%" PRIu64 " guest_insns_approx=%" PRIu64 " exits=%" PRIu64
               " open_exits=%" PRIu64 "\n",
            hv_insns, guest_insns, exits, open);
    put_trigger(f, &none_trigger);
    for (uint32_t i = 0; i < TRIGGER_SLOTS; i++) {
        if (triggers[i].vaddr) {
            put_trigger(f, &triggers[i]);
        }
    }
    for (uint64_t s = 0; s < n_slots; s++) {
        if (hist_all[s]) {
            fprintf(f, "pc all 0x%" PRIx64 " %" PRIu64 "\n", hv_start + 4 * s, hist_all[s]);
        }
    }
    for (int c = 0; c <= MAX_CLASSES; c++) {
        for (uint64_t s = 0; hist_cls[c] && s < n_slots; s++) {
            if (hist_cls[c][s]) {
                fprintf(f, "pc %d 0x%" PRIx64 " %" PRIu64 "\n", c, hv_start + 4 * s,
                        hist_cls[c][s]);
            }
        }
    }
    for (int i = 0; i < n_marks; i++) {
        fprintf(f, "mark %d vcpu=%u hv_insns=%" PRIu64 " guest_insns_approx=%" PRIu64 " exits=%" PRIu64 "\n",
                i, marks[i].vcpu, marks[i].hv_insns, marks[i].guest_insns, marks[i].exits);
    }
    fclose(f);
    if (buf) {
        qemu_plugin_outs(buf);
        free(buf);
    }
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                              const void *info, int argc,
                                                              char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strncmp(a, "hv_start=", 9)) {
            hv_start = strtoull(a + 9, NULL, 0);
        } else if (!strncmp(a, "hv_end=", 7)) {
            hv_end = strtoull(a + 7, NULL, 0);
        } else if (!strncmp(a, "out=", 4)) {
            out_path = a + 4;
        } else if (!strncmp(a, "stop_mark=", 10)) {
            stop_mark = strtol(a + 10, NULL, 0);
        } else if (!strcmp(a, "pairs=on")) {
            pairs = true;
        } else {
            fprintf(stderr, "bench-exit-profile: unknown argument %s\n", a);
            return 1;
        }
    }
    if (hv_end <= hv_start || (hv_end - hv_start) > (1ull << 30)) {
        fprintf(stderr, "bench-exit-profile: need hv_start < hv_end (at most 1 GiB apart)\n");
        return 1;
    }
    n_slots = (hv_end - hv_start + 3) / 4;
    hist_all = calloc(n_slots, sizeof(uint64_t));
    triggers = calloc(TRIGGER_SLOTS, sizeof *triggers);
    if (!hist_all || !triggers) {
        return 1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
