/*
 * insn_counter.c - a QEMU (7.2, plugin API version 1) TCG plugin for qemu-aarch64 that counts the
 * executed guest instructions by class, from their A64 encoding, and writes JSON snapshot lines.
 *
 *   qemu-aarch64 -plugin ./insn_counter.so,out=counts.jsonl[,verify=v.tsv] ...
 *
 * Snapshots: a guest call lseek(fd, offset=MARK_MAGIC | label, whence) (aarch64 syscall 62; the runner
 * seeks /dev/null, which succeeds and does nothing) writes one line {"ev":"mark","label":..,"counts":{..}}
 * and flushes it; the syscall itself still runs. A first line ("ev":"start") names the counters and a last one ("ev":"exit") is
 * written when the guest exits.
 *
 * Counting: at translation time each translation block (TB) is classified instruction by instruction;
 * at execution time its per-counter totals are added to the global counters by inline ADD_U64 ops:
 * exact while one guest thread runs (the adds are not atomic, so with several threads running at once
 * increments can be lost: the tool refuses --threads > 1 on a simulated core). The add happens when the
 * TB is entered, so an instruction that faults in the middle of a TB would leave the rest of that TB
 * counted; ordinary user-space code (no SIGSEGV handling) does not do that.
 *
 * verify=PATH (debugging): at translation, write "counter<TAB>class<TAB>disassembly" for every
 * instruction that a kind counter matches or whose mnemonic is one the kinds are meant to match, and
 * a "class<TAB>mnemonic<TAB>n" histogram of all translated instructions at exit.
 *
 * The declarations below are our own, written from QEMU's documented plugin API/ABI (version 1, as
 * in QEMU 7.2); QEMU's qemu-plugin.h is deliberately not used.
 */
#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- plugin API declarations (v1) */
#define EXPORT __attribute__((visibility("default")))
typedef uint64_t qemu_plugin_id_t;
typedef struct {
    const char *target_name;
    struct { int min; int cur; } version;
    bool system_emulation;
    union { struct { int smp_vcpus; int max_vcpus; } system; };
} qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*vcpu_simple_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index);
typedef void (*syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num,
                             uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
                             uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
char *qemu_plugin_insn_disas(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, syscall_cb_t cb);
void qemu_plugin_register_vcpu_init_cb(qemu_plugin_id_t id, vcpu_simple_cb_t cb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);

#define OUR_API_VERSION 1
EXPORT int qemu_plugin_version = OUR_API_VERSION;

/* ---------------------------------------------------------------------------------- counters */
#define MARK_SYSCALL 62                      /* aarch64 __NR_lseek */
#define MARK_MAGIC 0x7466647000000000ULL     /* "tfdp" in the high 32 bits; low 32 bits: label */
#define MARK_MASK 0xffffffff00000000ULL

/* Exclusive classes (they add up to the total) by op0 = bits 28:25, then kinds (subsets of them). */
enum { LDST_SCALAR, LDST_SIMD, DP_SIMD_FP, BRANCH_SYS, DP_IMM, DP_REG, SVE, SME, OTHER, N_CLASSES,
       FMLA_F32 = N_CLASSES, FMLA_F16, SDOT_UDOT, USDOT_SUDOT, SMMLA_UMMLA, SMLAL_UMLAL, N_COUNTERS };
static const char *const NAMES[N_COUNTERS] = {
    "ldst_scalar", "ldst_simd", "dp_simd_fp", "branch_sys", "dp_imm", "dp_reg", "sve", "sme", "other",
    "fmla_f32", "fmla_f16", "sdot_udot", "usdot_sudot", "smmla_ummla", "smlal_umlal",
};

/* (mask, value, counter): Advanced SIMD encodings, from the Arm ARM (A64 "Advanced SIMD three same",
 * "three same (FP16)", "three same extra", "three different", "vector x indexed element"). Q (bit 30)
 * is left free everywhere except SMMLA & co, where Q must be 1. Checked against binutils' opcode
 * table values and, at run time, against QEMU's disassembler (verify=). */
static const struct { uint32_t mask, value; int counter; } KINDS[] = {
    {0xbfa0fc00, 0x0e20cc00, FMLA_F32},   /* FMLA (vector), sz=0 -> .2s/.4s (bit 22 checked below) */
    {0xbfa0fc00, 0x0ea0cc00, FMLA_F32},   /* FMLS (vector) */
    {0xbfc0f400, 0x0f801000, FMLA_F32},   /* FMLA (by element), size=10 (single) */
    {0xbfc0f400, 0x0f805000, FMLA_F32},   /* FMLS (by element), size=10 */
    {0xbfe0fc00, 0x0e400c00, FMLA_F16},   /* FMLA (vector), half precision (FEAT_FP16) */
    {0xbfe0fc00, 0x0ec00c00, FMLA_F16},   /* FMLS (vector), half precision */
    {0xbfc0f400, 0x0f001000, FMLA_F16},   /* FMLA (by element), size=00 (half) */
    {0xbfc0f400, 0x0f005000, FMLA_F16},   /* FMLS (by element), size=00 */
    {0x9fe0fc00, 0x0e809400, SDOT_UDOT},  /* SDOT/UDOT (vector), U = bit 29 free */
    {0x9fc0f400, 0x0f80e000, SDOT_UDOT},  /* SDOT/UDOT (by element) */
    {0xbfe0fc00, 0x0e809c00, USDOT_SUDOT},/* USDOT (vector) (FEAT_I8MM) */
    {0xbfc0f400, 0x0f80f000, USDOT_SUDOT},/* USDOT (by element) */
    {0xbfc0f400, 0x0f00f000, USDOT_SUDOT},/* SUDOT (by element) */
    {0xdfe0fc00, 0x4e80a400, SMMLA_UMMLA},/* SMMLA/UMMLA (U = bit 29 free) */
    {0xffe0fc00, 0x4e80ac00, SMMLA_UMMLA},/* USMMLA */
    {0x9f20fc00, 0x0e208000, SMLAL_UMLAL},/* SMLAL/SMLAL2/UMLAL/UMLAL2 (vector), any size */
    {0x9f00f400, 0x0f002000, SMLAL_UMLAL},/* SMLAL/UMLAL[2] (by element) */
};
#define N_KINDS (sizeof KINDS / sizeof KINDS[0])

static uint64_t counters[N_COUNTERS];
static FILE *out;
static FILE *verify;
static uint64_t marks;
static unsigned int vcpus_started;     /* linux-user: one vCPU per guest thread ever created */
static uint64_t hist[N_CLASSES][64];   /* verify mode: per class, per mnemonic slot */
static char hist_names[64][16];

static void complain(const char *text)
{
    fputs(text, stderr);             /* qemu_plugin_outs() only shows with -d plugin */
    qemu_plugin_outs(text);
}

static int insn_class(uint32_t w)
{
    uint32_t op0 = (w >> 25) & 0xf;
    if ((op0 & 0x5) == 0x4)                  /* x1x0: loads and stores, bit 26 = SIMD&FP */
        return (w & (1u << 26)) ? LDST_SIMD : LDST_SCALAR;
    if ((op0 & 0x7) == 0x7) return DP_SIMD_FP;      /* x111 */
    if ((op0 & 0xe) == 0xa) return BRANCH_SYS;      /* 101x */
    if ((op0 & 0xe) == 0x8) return DP_IMM;          /* 100x */
    if ((op0 & 0x7) == 0x5) return DP_REG;          /* x101 */
    if (op0 == 0x2) return SVE;                     /* 0010 */
    if (op0 == 0x0 && (w >> 31)) return SME;        /* 0000 with bit 31 set */
    return OTHER;                                   /* reserved (UDF...), 0001, 0011 unallocated */
}

static int insn_kind(uint32_t w)
{
    for (size_t i = 0; i < N_KINDS; i++) {
        if ((w & KINDS[i].mask) != KINDS[i].value) continue;
        if (i < 2 && (w & (1u << 22))) return -1;   /* FMLA/FMLS vector with sz=1 is double */
        return KINDS[i].counter;
    }
    return -1;
}

static const char *const CHECKED[] = {"fmla", "fmls", "sdot", "udot", "usdot", "sudot", "smmla",
                                      "ummla", "usmmla", "smlal", "smlal2", "umlal", "umlal2", NULL};

static void verify_insn(const struct qemu_plugin_insn *insn, int cls, int kind)
{
    char *text = qemu_plugin_insn_disas(insn);
    char mnem[16] = "?";
    if (text) sscanf(text, "%15s", mnem);
    bool checked = false;
    for (int i = 0; CHECKED[i]; i++) checked |= strcmp(mnem, CHECKED[i]) == 0;
    if (kind >= 0 || checked)
        fprintf(verify, "%s\t%s\t%s\n", kind >= 0 ? NAMES[kind] : "-", NAMES[cls], text ? text : "?");
    int slot;
    for (slot = 0; slot < 63 && hist_names[slot][0] && strcmp(hist_names[slot], mnem); slot++) {}
    if (!hist_names[slot][0]) snprintf(hist_names[slot], sizeof hist_names[slot], "%s", mnem);
    hist[cls][slot]++;                       /* slot 63 collects the overflow */
    free(text);
}

static void vcpu_init(qemu_plugin_id_t id, unsigned int vcpu)
{
    __atomic_fetch_add(&vcpus_started, 1, __ATOMIC_RELAXED);
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    uint64_t n[N_COUNTERS] = {0};
    size_t count = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < count; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint32_t w = 0;
        if (qemu_plugin_insn_size(insn) == 4) memcpy(&w, qemu_plugin_insn_data(insn), 4);
        int cls = insn_class(w), kind = insn_kind(w);  /* little-endian host and guest */
        n[cls]++;
        if (kind >= 0) n[kind]++;
        if (verify) verify_insn(insn, cls, kind);
    }
    for (int k = 0; k < N_COUNTERS; k++)
        if (n[k]) qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &counters[k], n[k]);
}

static void write_line(const char *ev, unsigned int vcpu, uint64_t label, uint64_t whence)
{
    uint64_t total = 0;
    fprintf(out, "{\"ev\":\"%s\",\"pid\":%d,\"vcpu\":%u,\"vcpus_started\":%u,\"seq\":%llu,\"label\":%llu,"
            "\"whence\":%llu,\"counts\":{", ev, (int)getpid(), vcpu, __atomic_load_n(&vcpus_started, __ATOMIC_RELAXED),
            (unsigned long long)marks, (unsigned long long)label, (unsigned long long)whence);
    for (int k = 0; k < N_COUNTERS; k++) {
        uint64_t v = __atomic_load_n(&counters[k], __ATOMIC_RELAXED);
        if (k < N_CLASSES) total += v;
        fprintf(out, "\"%s\":%llu,", NAMES[k], (unsigned long long)v);
    }
    fprintf(out, "\"total\":%llu}}\n", (unsigned long long)total);
    fflush(out);
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    /* lseek(fd, offset, whence) with the magic in the offset's high 32 bits (the runner seeks /dev/null) */
    if (num != MARK_SYSCALL || (a2 & MARK_MASK) != MARK_MAGIC) return;
    marks++;
    write_line("mark", vcpu, a2 & ~MARK_MASK, a3);
}

static void on_atexit(qemu_plugin_id_t id, void *udata)
{
    write_line("exit", 0, 0, 0);
    if (verify) {
        for (int c = 0; c < N_CLASSES; c++)
            for (int s = 0; s < 64; s++)
                if (hist[c][s])
                    fprintf(verify, "#hist\t%s\t%s\t%llu\n", NAMES[c], s == 63 ? "(more)" : hist_names[s],
                            (unsigned long long)hist[c][s]);
        fclose(verify);
    }
    fclose(out);
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    const char *path = NULL, *verify_path = NULL;
    char msg[256];
    if (info->version.min > OUR_API_VERSION || info->version.cur < OUR_API_VERSION) {
        snprintf(msg, sizeof msg, "insn_counter: built for plugin API %d, this QEMU supports %d..%d\n",
                 OUR_API_VERSION, info->version.min, info->version.cur);
        complain(msg);
        return -1;
    }
    if (strcmp(info->target_name, "aarch64") != 0) {
        snprintf(msg, sizeof msg, "insn_counter: aarch64 guests only, not %s\n", info->target_name);
        complain(msg);
        return -1;
    }
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) path = argv[i] + 4;
        else if (strncmp(argv[i], "verify=", 7) == 0) verify_path = argv[i] + 7;
        else {
            snprintf(msg, sizeof msg, "insn_counter: unknown argument %.100s (takes out=PATH, "
                     "verify=PATH)\n", argv[i]);
            complain(msg);
            return -1;
        }
    }
    if (!path || !(out = fopen(path, "w"))) {
        snprintf(msg, sizeof msg, "insn_counter: need a writable out=PATH (got %.150s)\n", path ? path : "none");
        complain(msg);
        return -1;
    }
    if (verify_path && !(verify = fopen(verify_path, "w"))) {
        complain("insn_counter: cannot open verify= file\n");
        return -1;
    }
    fprintf(out, "{\"ev\":\"start\",\"pid\":%d,\"api\":{\"min\":%d,\"cur\":%d},\"magic\":%llu,"
            "\"classes\":[", (int)getpid(), info->version.min, info->version.cur, (unsigned long long)MARK_MAGIC);
    for (int k = 0; k < N_COUNTERS; k++)
        fprintf(out, "\"%s\"%s", NAMES[k], k == N_CLASSES - 1 ? "],\"kinds\":[" : k == N_COUNTERS - 1 ? "]}\n" : ",");
    fflush(out);
    qemu_plugin_register_vcpu_init_cb(id, vcpu_init);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, on_atexit, NULL);
    return 0;
}
