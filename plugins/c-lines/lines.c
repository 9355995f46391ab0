/*
 * lines: a DynPlug plugin in C that uses the version 2 host context.
 * Build: cc -shared -fPIC -O2 -I sdk/include -o liblines.so plugins/c-lines/lines.c
 *
 * Counts the lines, words and bytes of its input (like `wc`), answering
 * {"lines":L,"words":W,"bytes":B}. It works through the input in 64 KiB chunks,
 * reporting progress after each, stops when its caller gives up, logs a summary
 * and publishes the event `counted` with the same JSON.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynplug.h"

#define CHUNK (64u * 1024u)

static int instance_token;

static void *lines_create(void) { return &instance_token; }

static void lines_destroy(void *instance) { (void)instance; }

static void lines_free_buf(struct dynplug_buf buf) { free(buf.ptr); }

static int32_t answer(struct dynplug_buf *out, int32_t status, const char *text) {
    out->len = strlen(text);
    out->ptr = (uint8_t *)malloc(out->len ? out->len : 1);
    if (out->ptr == NULL) {
        out->len = 0;
        return DYNPLUG_STATUS_ERROR;
    }
    memcpy(out->ptr, text, out->len);
    return status;
}

static int32_t lines_execute_ctx(void *instance, const struct dynplug_context *ctx,
                                 const uint8_t *input, size_t len,
                                 struct dynplug_buf *out) {
    (void)instance;
    unsigned long long lines = 0, words = 0;
    int in_word = 0;
    char text[160];
    for (size_t at = 0; at < len; at += CHUNK) {
        if (ctx->cancelled(ctx)) {
            dynplug_log(ctx, DYNPLUG_LOG_WARN, "cancelled before the end of the input");
            return answer(out, DYNPLUG_STATUS_ERROR, "cancelled");
        }
        size_t end = len - at < CHUNK ? len : at + CHUNK;
        for (size_t i = at; i < end; i++) {
            uint8_t c = input[i];
            if (c == '\n')
                lines++;
            int space = c == ' ' || c == '\n' || c == '\t' || c == '\r';
            if (!space && !in_word)
                words++;
            in_word = !space;
        }
        snprintf(text, sizeof text, "%zu of %zu bytes", end, len);
        dynplug_progress(ctx, (double)end / (double)len, text);
    }
    snprintf(text, sizeof text, "{\"lines\":%llu,\"words\":%llu,\"bytes\":%zu}", lines,
             words, len);
    dynplug_log(ctx, DYNPLUG_LOG_INFO, text);
    dynplug_emit(ctx, "counted", text);
    return answer(out, DYNPLUG_STATUS_OK, text);
}

/* Hosts that pass no context (none do today) still get an answer. */
static int32_t lines_execute(void *instance, const uint8_t *input, size_t len,
                             struct dynplug_buf *out) {
    (void)instance;
    (void)input;
    (void)len;
    return answer(out, DYNPLUG_STATUS_ERROR, "this plugin needs a host context (ABI 2)");
}

DYNPLUG_METADATA("lines", "1.0.0", "counts lines, words and bytes (C, with progress: ABI version 2)",
                 "false", "");

static const struct dynplug_plugin table = {
    .magic = DYNPLUG_MAGIC,
    .abi_version = DYNPLUG_ABI_VERSION,
    .struct_size = sizeof(struct dynplug_plugin),
    .flags = 0,
    .name = "lines",
    .version = "1.0.0",
    .description = "counts lines, words and bytes (C, with progress: ABI version 2)",
    .create = lines_create,
    .destroy = lines_destroy,
    .execute = lines_execute,
    .free_buf = lines_free_buf,
    .execute_ctx = lines_execute_ctx,
};

const struct dynplug_plugin *dynplug_plugin_entry(void) { return &table; }
