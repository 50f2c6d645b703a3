/*
 * board.c - an Overlord client written the way a microcontroller sketch
 * is: one fixed 512-byte buffer, a raw TCP socket, HTTP/1.0, no library
 * beyond the socket calls. Kept in lockstep with arduino/overlord.ino
 * (same steps, same parsing; there the socket is a WiFiClient).
 *
 * One run is one wake-up of the board:
 *   1. send readings:   GET /v1/readings?device=ID&token=TOK&N1=21.5...
 *      reply:           ok,<stored>,<pending>   then up to 3 inbox rows
 *   2. act on each inbox row (here: print it), remember the highest seq;
 *   3. confirm:         GET /v1/inbox/ack?device=ID&token=TOK&upto=SEQ
 *      reply:           ok,<removed>,<remaining>
 *   4. while rows remain: GET /v1/inbox?...&limit=3, act, confirm again.
 * A row is confirmed only after it was acted on, so a reply lost on the
 * way costs a repeat, never a lost command.
 *
 * Rows are CSV (RFC 4180): a value may hold commas and quotes, so a row
 * is split with split_row(), never on every comma. The server never sends
 * a line break inside a value (it refuses them), so one line is one row.
 * A row longer than the buffer (values go up to 1 KiB) is not acted on,
 * only reported and confirmed, so it cannot block the inbox.
 *
 * Build and run:
 *   cc -std=c99 -Wall -o board examples/board.c
 *   ./board 127.0.0.1 8080 gh3 TOKEN N1=21.5 L2=1
 * Exit status 0 when the readings are stored (the reply is ok,...).
 */
#define _POSIX_C_SOURCE 200112L

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE 512
#define MAX_ROUNDS 20 /* inbox pages per wake-up, so a flood cannot keep us awake */
#define MAX_FIELDS 8  /* seq,kind,time,from,sensor,value[,device] */

static char buf[BUF_SIZE]; /* the only buffer: request, then each reply line */
static int cut;            /* the last line read did not fit in buf */

static const char *host, *port, *device, *token;

/* Open a TCP connection (on a board: client.connect(host, port)). */
static int open_socket(void) {
    struct addrinfo hints, *res, *ai;
    int fd = -1;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &res) != 0) return -1;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* Read one line into buf, without its \r\n. Byte by byte, as a board
 * reads client.read(). A line longer than the buffer is cut (the rest is
 * skipped) and `cut` is set. Returns its length, or -1 at the end of the
 * reply. */
static int read_line(int fd) {
    int n = 0, got = 0;
    char c;
    cut = 0;
    while (read(fd, &c, 1) == 1) {
        got = 1;
        if (c == '\n') break;
        if (c == '\r') continue;
        if (n < BUF_SIZE - 1)
            buf[n++] = c;
        else
            cut = 1;
    }
    buf[n] = '\0';
    return got ? n : -1;
}

/* Split the row in buf into fields, in place, undoing RFC 4180 quoting:
 * "a,b" is one field a,b and "say ""hi""" is say "hi". Returns the number
 * of fields, or -1 for a row that is not well-formed CSV. */
static int split_row(char **field, int max) {
    char *r = buf, *w = buf; /* read and write positions, w <= r */
    int n = 0;
    for (;;) {
        if (n == max) return -1;
        field[n++] = w;
        if (*r == '"') {
            for (r++;; r++) {
                if (*r == '\0') return -1;                 /* no closing quote */
                if (*r == '"' && r[1] != '"') break;
                if (*r == '"') r++;                         /* "" is one " */
                *w++ = *r;
            }
            r++;                                            /* the closing quote */
            if (*r != ',' && *r != '\0') return -1;
        } else {
            while (*r != ',' && *r != '\0') *w++ = *r++;
        }
        if (*r == '\0') {
            *w = '\0';
            return n;
        }
        *w++ = '\0';
        r++;
    }
}

/* Send "GET path" and read the head. Returns the socket positioned at the
 * body, or -1; *status gets the HTTP status. */
static int get(const char *path, int *status) {
    int fd = open_socket(), len;
    *status = 0;
    if (fd < 0) return -1;
    len = snprintf(buf, BUF_SIZE, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host);
    if (len <= 0 || len >= BUF_SIZE || write(fd, buf, (size_t)len) != len) {
        close(fd);
        return -1;
    }
    if (read_line(fd) < 0 || strncmp(buf, "HTTP/1.", 7) != 0) {
        close(fd);
        return -1;
    }
    *status = atoi(buf + 9);              /* "HTTP/1.0 200 OK" */
    while ((len = read_line(fd)) > 0) {   /* skip headers up to the blank line */
    }
    return fd;
}

/* One inbox row "seq,kind,time,from,sensor,value": act on it and return
 * its seq (0: not a row). Here acting is printing the row, and for a
 * command "set SENSOR=VALUE" (on a board: switch the relay...). */
static long act_on_row(void) {
    char *f[MAX_FIELDS];
    long seq = strtol(buf, NULL, 10);
    if (seq <= 0) return 0;
    if (cut) {
        printf("skipped %ld: longer than the buffer\n", seq);
        return seq;
    }
    printf("inbox %s\n", buf);
    if (split_row(f, MAX_FIELDS) < 6) {
        printf("skipped %ld: not an inbox row\n", seq);
        return seq;
    }
    if (strcmp(f[1], "command") == 0) printf("set %s=%s\n", f[4], f[5]);
    return seq;
}

/* Confirm every row up to seq; returns the rows still pending or -1. */
static long ack(long upto) {
    char path[160];
    int status, fd;
    long remaining = -1;
    snprintf(path, sizeof path, "/v1/inbox/ack?device=%s&token=%s&upto=%ld", device, token, upto);
    fd = get(path, &status);
    if (fd < 0) return -1;
    if (read_line(fd) >= 0 && status == 200 && strncmp(buf, "ok,", 3) == 0) {
        const char *p = strchr(buf + 3, ',');  /* ok,<removed>,<remaining> */
        printf("%s\n", buf);
        remaining = p ? strtol(p + 1, NULL, 10) : -1;
    }
    close(fd);
    return remaining;
}

int main(int argc, char **argv) {
    char path[BUF_SIZE];
    int status, fd, i, used, rounds;
    long pending = 0, last = 0, seq;

    if (argc < 5) {
        fprintf(stderr, "usage: %s HOST PORT DEVICE TOKEN [SENSOR=VALUE ...]\n", argv[0]);
        return 2;
    }
    host = argv[1];
    port = argv[2];
    device = argv[3];
    token = argv[4];

    /* 1. Readings. (Values must be URL-safe as given, like 21.5 or 1.) */
    used = snprintf(path, sizeof path, "/v1/readings?device=%s&token=%s", device, token);
    for (i = 5; i < argc && used < (int)sizeof path; i++)
        used += snprintf(path + used, sizeof path - (size_t)used, "&%s", argv[i]);
    if (used >= (int)sizeof path) {
        fprintf(stderr, "request too long for the buffer\n");
        return 2;
    }
    fd = get(path, &status);
    if (fd < 0) {
        fprintf(stderr, "no connection\n");
        return 1;
    }
    if (read_line(fd) < 0 || status != 200 || strncmp(buf, "ok,", 3) != 0) {
        fprintf(stderr, "refused (%d): %s\n", status, buf);
        close(fd);
        return 1;
    }
    printf("%s\n", buf);                           /* ok,<stored>,<pending> */
    {
        const char *p = strchr(buf + 3, ',');
        pending = p ? strtol(p + 1, NULL, 10) : 0;
    }
    /* 2. The inbox rows that came with the reply. */
    while (read_line(fd) > 0)
        if ((seq = act_on_row()) > last) last = seq;
    close(fd);

    /* 3 and 4. Confirm, then fetch and confirm the rest, page by page. */
    for (rounds = 0; pending > 0 && rounds < MAX_ROUNDS; rounds++) {
        if (last > 0) {
            pending = ack(last);
            if (pending <= 0) break;
        }
        snprintf(path, sizeof path, "/v1/inbox?device=%s&token=%s&limit=3", device, token);
        fd = get(path, &status);
        if (fd < 0 || status != 200) break;
        read_line(fd);                             /* the header row */
        while (read_line(fd) > 0)
            if ((seq = act_on_row()) > last) last = seq;
        close(fd);
    }
    return 0;
}
