/* SPDX-License-Identifier: MIT */
/* Write-through cache of L2 tables, least recently used first out, bounded
 * in bytes.  Tables in use by a request are pinned and never evicted; the
 * bound may be exceeded while that many are pinned. */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#include "qed-image.h"

#define HASH_BUCKETS 256u
#define DEFAULT_BUDGET (32u * 1024 * 1024)
#define MIN_TABLES 4u

struct l2cache {
    struct table *buckets[HASH_BUCKETS];
    /* Unpinned tables, most recently used at the head. */
    struct table *lru_head, *lru_tail;
    uint64_t table_bytes;
    size_t count;
    size_t max_tables;
};

static unsigned bucket_of(uint64_t offset)
{
    uint64_t h = (offset >> 12) * 0x9e3779b97f4a7c15ull;
    return (unsigned)(h >> 56) & (HASH_BUCKETS - 1);
}

int qedi_l2cache_new(size_t budget_bytes, uint64_t table_bytes,
                struct l2cache **out)
{
    struct l2cache *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    if (budget_bytes == 0)
        budget_bytes = DEFAULT_BUDGET;
    c->table_bytes = table_bytes;
    c->max_tables = QED_MAX(budget_bytes / table_bytes, (size_t)MIN_TABLES);
    *out = c;
    return 0;
}

static void lru_unlink(struct l2cache *c, struct table *t)
{
    if (t->lru_prev)
        t->lru_prev->lru_next = t->lru_next;
    else if (c->lru_head == t)
        c->lru_head = t->lru_next;
    if (t->lru_next)
        t->lru_next->lru_prev = t->lru_prev;
    else if (c->lru_tail == t)
        c->lru_tail = t->lru_prev;
    t->lru_prev = t->lru_next = NULL;
}

static void lru_push_head(struct l2cache *c, struct table *t)
{
    t->lru_prev = NULL;
    t->lru_next = c->lru_head;
    if (c->lru_head)
        c->lru_head->lru_prev = t;
    c->lru_head = t;
    if (!c->lru_tail)
        c->lru_tail = t;
}

static void hash_remove(struct l2cache *c, struct table *t)
{
    for (struct table **p = &c->buckets[bucket_of(t->offset)]; *p;
         p = &(*p)->hash_next) {
        if (*p == t) {
            *p = t->hash_next;
            return;
        }
    }
}

static void destroy(struct l2cache *c, struct table *t)
{
    hash_remove(c, t);
    c->count--;
    free(t->bytes);
    free(t);
}

static void evict_to_fit(struct l2cache *c)
{
    while (c->count > c->max_tables && c->lru_tail) {
        struct table *victim = c->lru_tail;
        lru_unlink(c, victim);
        destroy(c, victim);
    }
}

struct table *qedi_l2cache_find(struct l2cache *c, uint64_t offset)
{
    for (struct table *t = c->buckets[bucket_of(offset)]; t; t = t->hash_next) {
        if (t->offset == offset) {
            if (t->refs++ == 0)
                lru_unlink(c, t);
            return t;
        }
    }
    return NULL;
}

struct table *qedi_l2cache_insert(struct l2cache *c, uint64_t offset, bool zeroed)
{
    struct table *t = calloc(1, sizeof(*t));
    unsigned b = bucket_of(offset);

    if (!t)
        return NULL;
    t->bytes = zeroed ? qedi_aligned_zalloc(c->table_bytes)
                      : qedi_aligned_alloc(c->table_bytes);
    if (!t->bytes) {
        free(t);
        return NULL;
    }
    t->offset = offset;
    t->refs = 1;
    t->hash_next = c->buckets[b];
    c->buckets[b] = t;
    c->count++;
    evict_to_fit(c);
    return t;
}

void qedi_l2cache_put(struct l2cache *c, struct table *t)
{
    /* A put without its reference would free a table still in use. */
    assert(t->refs > 0);
    if (--t->refs > 0)
        return;
    if (t->failed) {
        destroy(c, t);
        return;
    }
    lru_push_head(c, t);
    evict_to_fit(c);
}

/* Forgets a table whose contents can no longer be trusted (a failed load or
 * an undone allocation); it is freed when the last user lets go. */
void qedi_l2cache_drop(struct l2cache *c, struct table *t)
{
    t->failed = true;
    hash_remove(c, t);
}

void qedi_l2cache_forget(struct l2cache *c, uint64_t offset)
{
    struct table *t = qedi_l2cache_find(c, offset);

    if (t) {
        qedi_l2cache_drop(c, t);
        qedi_l2cache_put(c, t);
    }
}

void qedi_l2cache_free(struct l2cache *c)
{
    if (!c)
        return;
    for (unsigned b = 0; b < HASH_BUCKETS; b++) {
        while (c->buckets[b]) {
            struct table *t = c->buckets[b];
            c->buckets[b] = t->hash_next;
            free(t->bytes);
            free(t);
        }
    }
    free(c);
}
