/* Test harness for a generated model: prints each image's output integers on one line. The images come from
 * standard input (their number, then each image's input integers), or, built with -DMODEL_EMBEDDED_INPUTS, from
 * inputs.h (MODEL_IMAGES and model_inputs, for a bare-metal core without input). Built for RISC-V with
 * -DMODEL_INSTRET, it also prints "instret HI LO": the instructions model_run retired (HI * 2**32 + LO), from the
 * minstret counter, which QEMU counts exactly with -icount shift=0. */
#include <stdio.h>
#include "model.h"
#ifdef MODEL_EMBEDDED_INPUTS
#include "inputs.h"
#endif

#ifdef MODEL_INSTRET
#define CSR_READ(v, csr) __asm__ volatile(".option push\n.option arch, +zicsr\ncsrr %0, " csr "\n.option pop" : "=r"(v))
static uint64_t instret(void) {
    uint32_t hi, lo, again;
    do { /* the high word again: a carry between the two reads shows */
        CSR_READ(hi, "minstreth");
        CSR_READ(lo, "minstret");
        CSR_READ(again, "minstreth");
    } while (hi != again);
    return ((uint64_t)hi << 32) | lo;
}
#endif

static void print_outputs(const act_t *in) {
    act_t out[MODEL_OUTPUT_SIZE];
    int i;
#ifdef MODEL_INSTRET
    uint64_t n = instret();
    model_run(in, out);
    n = instret() - n;
#else
    model_run(in, out);
#endif
    for (i = 0; i < MODEL_OUTPUT_SIZE; i++) printf(i ? " %d" : "%d", (int)out[i]);
    printf("\n");
#ifdef MODEL_INSTRET
    printf("instret %lu %lu\n", (unsigned long)(n >> 32), (unsigned long)(n & 0xffffffffu));
#endif
}

int main(void) {
    int k;
#ifdef MODEL_EMBEDDED_INPUTS
    for (k = 0; k < MODEL_IMAGES; k++) print_outputs(model_inputs[k]);
#else
    static act_t in[MODEL_INPUT_SIZE];
    int n, i, v;
    if (scanf("%d", &n) != 1) return 1;
    for (k = 0; k < n; k++) {
        for (i = 0; i < MODEL_INPUT_SIZE; i++) {
            if (scanf("%d", &v) != 1) return 1;
            in[i] = (act_t)v;
        }
        print_outputs(in);
    }
#endif
    return 0;
}
