// overlord.ino - the Arduino (ESP32 / ESP8266 WiFi) twin of ../board.c.
// Same steps, same parsing, same 512-byte buffer; keep the two in
// lockstep (board.c is the one the tests compile and run).
//
// One loop() is one wake-up:
//   1. send readings:   GET /v1/readings?device=ID&token=TOK&N1=21.5
//      reply:           ok,<stored>,<pending>   then up to 3 inbox rows
//   2. act on each inbox row, remember the highest seq;
//   3. confirm:         GET /v1/inbox/ack?device=ID&token=TOK&upto=SEQ
//   4. while rows remain: GET /v1/inbox?...&limit=3, act, confirm again.

#include <WiFi.h>  // ESP8266: #include <ESP8266WiFi.h>

const char *WIFI_SSID = "greenhouse";
const char *WIFI_PASS = "secret";
const char *HOST = "192.168.1.10";
const uint16_t PORT = 8080;
const char *DEVICE = "gh3";
const char *TOKEN = "0123456789abcdef0123456789abcdef";
const int RELAY_PIN = 5;

#define BUF_SIZE 512
#define MAX_ROUNDS 20
#define MAX_FIELDS 8  // seq,kind,time,from,sensor,value[,device]

static char buf[BUF_SIZE];
static bool cut;  // the last line read did not fit in buf
WiFiClient client;

// Read one line into buf without its \r\n; -1 at the end of the reply.
// A line longer than the buffer is cut (the rest skipped) and `cut` set.
int read_line() {
  int n = 0;
  bool got = false;
  cut = false;
  unsigned long until = millis() + 10000;
  while (client.connected() || client.available()) {
    if (!client.available()) {
      if (millis() > until) break;
      delay(1);
      continue;
    }
    char c = client.read();
    got = true;
    if (c == '\n') break;
    if (c == '\r') continue;
    if (n < BUF_SIZE - 1)
      buf[n++] = c;
    else
      cut = true;
  }
  buf[n] = '\0';
  return got ? n : -1;
}

// Split the row in buf into fields, in place, undoing RFC 4180 quoting
// ("a,b" is one field; "" inside quotes is one "). Returns the number of
// fields, or -1 for a row that is not well-formed CSV. Never split a row
// on every comma: an S value may hold commas ("x,L1,true").
int split_row(char **field, int max) {
  char *r = buf, *w = buf;  // read and write positions, w <= r
  int n = 0;
  for (;;) {
    if (n == max) return -1;
    field[n++] = w;
    if (*r == '"') {
      for (r++;; r++) {
        if (*r == '\0') return -1;
        if (*r == '"' && r[1] != '"') break;
        if (*r == '"') r++;
        *w++ = *r;
      }
      r++;
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

// Send "GET path" over HTTP/1.0 and read the head; returns the status or 0.
int get(const char *path) {
  if (!client.connect(HOST, PORT)) return 0;
  snprintf(buf, BUF_SIZE, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, HOST);
  client.print(buf);
  if (read_line() < 0 || strncmp(buf, "HTTP/1.", 7) != 0) {
    client.stop();
    return 0;
  }
  int status = atoi(buf + 9);
  while (read_line() > 0) {
  }
  return status;
}

// One inbox row "seq,kind,time,from,sensor,value": act on it.
// A row too long for the buffer is not acted on, only confirmed (so it
// cannot block the inbox).
long act_on_row() {
  char *f[MAX_FIELDS];
  long seq = strtol(buf, NULL, 10);
  if (seq <= 0) return 0;
  if (cut) {
    Serial.print("skipped (too long) ");
    Serial.println(seq);
    return seq;
  }
  Serial.print("inbox ");
  Serial.println(buf);
  // A command for L1 switches the relay: "...,command,...,L1,true"
  if (split_row(f, MAX_FIELDS) >= 6 && strcmp(f[1], "command") == 0 &&
      strcmp(f[4], "L1") == 0)
    digitalWrite(RELAY_PIN, strcmp(f[5], "true") == 0);
  return seq;
}

long ack(long upto) {
  char path[160];
  long remaining = -1;
  snprintf(path, sizeof path, "/v1/inbox/ack?device=%s&token=%s&upto=%ld", DEVICE, TOKEN, upto);
  int status = get(path);
  if (status && read_line() >= 0 && status == 200 && strncmp(buf, "ok,", 3) == 0) {
    const char *p = strchr(buf + 3, ',');
    Serial.println(buf);
    remaining = p ? strtol(p + 1, NULL, 10) : -1;
  }
  client.stop();
  return remaining;
}

void setup() {
  Serial.begin(115200);
  pinMode(RELAY_PIN, OUTPUT);
  WiFi.begin(WIFI_SSID, WIFI_PASS);
  while (WiFi.status() != WL_CONNECTED) delay(250);
}

void loop() {
  char path[BUF_SIZE];
  long pending = 0, last = 0, seq;
  float celsius = analogRead(A0) * 0.1;  // your sensor here

  // 1. Readings.
  snprintf(path, sizeof path, "/v1/readings?device=%s&token=%s&N1=%.1f", DEVICE, TOKEN, celsius);
  int status = get(path);
  if (status == 200 && read_line() >= 0 && strncmp(buf, "ok,", 3) == 0) {
    Serial.println(buf);
    const char *p = strchr(buf + 3, ',');
    pending = p ? strtol(p + 1, NULL, 10) : 0;
    // 2. The inbox rows that came with the reply.
    while (read_line() > 0)
      if ((seq = act_on_row()) > last) last = seq;
  } else {
    Serial.print("refused: ");
    Serial.println(buf);
  }
  client.stop();

  // 3 and 4. Confirm, then fetch and confirm the rest.
  for (int rounds = 0; pending > 0 && rounds < MAX_ROUNDS; rounds++) {
    if (last > 0) {
      pending = ack(last);
      if (pending <= 0) break;
    }
    snprintf(path, sizeof path, "/v1/inbox?device=%s&token=%s&limit=3", DEVICE, TOKEN);
    if (get(path) != 200) break;
    read_line();  // the header row
    while (read_line() > 0)
      if ((seq = act_on_row()) > last) last = seq;
    client.stop();
  }
  client.stop();
  delay(60000);
}
