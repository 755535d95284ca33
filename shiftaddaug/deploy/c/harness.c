/* Test harness for a generated model: prints each image's output integers on one line. The images come from
 * standard input (their number, then each image's input integers), or, built with -DMODEL_EMBEDDED_INPUTS, from
 * inputs.h (MODEL_IMAGES and model_inputs, for a bare-metal core without input). */
#include <stdio.h>
#include "model.h"
#ifdef MODEL_EMBEDDED_INPUTS
#include "inputs.h"
#endif

static void print_outputs(const act_t *in) {
    act_t out[MODEL_OUTPUT_SIZE];
    int i;
    model_run(in, out);
    for (i = 0; i < MODEL_OUTPUT_SIZE; i++) printf(i ? " %d" : "%d", (int)out[i]);
    printf("\n");
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
