/* Test harness for a generated model: reads the number of images, then each image's input integers, from
 * standard input; prints each image's output integers on one line. */
#include <stdio.h>
#include "model.h"

int main(void) {
    static act_t in[MODEL_INPUT_SIZE];
    act_t out[MODEL_OUTPUT_SIZE];
    int n, k, i, v;
    if (scanf("%d", &n) != 1) return 1;
    for (k = 0; k < n; k++) {
        for (i = 0; i < MODEL_INPUT_SIZE; i++) {
            if (scanf("%d", &v) != 1) return 1;
            in[i] = (act_t)v;
        }
        model_run(in, out);
        for (i = 0; i < MODEL_OUTPUT_SIZE; i++) printf(i ? " %d" : "%d", (int)out[i]);
        printf("\n");
    }
    return 0;
}
