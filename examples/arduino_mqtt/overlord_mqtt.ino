// overlord_mqtt.ino - the MQTT twin of ../arduino/overlord.ino, for an
// ESP32 (ESP8266: include <ESP8266WiFi.h>) with the PubSubClient
// library (Library Manager: "PubSubClient" by Nick O'Leary).
//
// A SKETCH: no Arduino toolchain runs in this repository's tests, so it
// is not compiled there. The protocol it speaks is the one tests/mqtt.rs
// drives with mosquitto_pub/sub and paho-mqtt (docs/api.md, "MQTT").
//
//   connect:    username = device id, password = device token
//   readings:   PUBLISH overlord/ID/readings        "N1=21.5"
//   inbox:      SUBSCRIBE overlord/ID/inbox         one row per message:
//               seq,kind,time,from,sensor,value     (the HTTP inbox row)
//   confirm:    PUBLISH overlord/ID/inbox/ack       "upto=SEQ"
//   why not:    SUBSCRIBE overlord/ID/errors        "error,<code>,<detail>"
//
// PubSubClient publishes with QoS 0 only: a reading is sent once, with no
// PUBACK (the server stores it exactly as an HTTP request, but the board
// is not told). Where every reading must be confirmed, use the HTTP
// sketch (its "ok,1,0" comes after the fsync) or an MQTT library with
// QoS 1 (its PUBACK comes after the fsync too). Inbox rows are not lost
// either way: they stay on the server until acked, and come again after
// a reconnect, so acting on a row must be safe to repeat.

#include <PubSubClient.h>
#include <WiFi.h>  // ESP8266: #include <ESP8266WiFi.h>

const char *WIFI_SSID = "greenhouse";
const char *WIFI_PASS = "secret";
const char *HOST = "192.168.1.10";
const uint16_t MQTT_PORT = 1883;
const char *DEVICE = "gh3";
const char *TOKEN = "0123456789abcdef0123456789abcdef";
const int RELAY_PIN = 5;

#define BUF_SIZE 512
#define MAX_FIELDS 8  // seq,kind,time,from,sensor,value[,device]

static char buf[BUF_SIZE];
static char topic_readings[64], topic_inbox[64], topic_ack[64], topic_errors[64];
WiFiClient net;
PubSubClient mqtt(net);

// Split the row in buf into fields, in place, undoing RFC 4180 quoting
// (as ../arduino/overlord.ino). Returns the number of fields, or -1.
int split_row(char **field, int max) {
  char *r = buf, *w = buf;
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

// Every message the server sends: an inbox row or an error line.
void on_message(char *topic, byte *payload, unsigned int len) {
  if (len >= BUF_SIZE) len = BUF_SIZE - 1;  // too long: confirmed unread
  memcpy(buf, payload, len);
  buf[len] = '\0';
  if (len > 0 && buf[len - 1] == '\n') buf[--len] = '\0';
  if (strcmp(topic, topic_errors) == 0) {
    Serial.print("refused: ");
    Serial.println(buf);
    return;
  }
  long seq = strtol(buf, NULL, 10);
  if (seq <= 0) return;
  Serial.print("inbox ");
  Serial.println(buf);
  char *f[MAX_FIELDS];
  // A command for L1 switches the relay: "...,command,...,L1,true"
  if (split_row(f, MAX_FIELDS) >= 6 && strcmp(f[1], "command") == 0 &&
      strcmp(f[4], "L1") == 0)
    digitalWrite(RELAY_PIN, strcmp(f[5], "true") == 0);
  // Acted on: confirm it, so it is not sent again.
  char ack[32];
  snprintf(ack, sizeof ack, "upto=%ld", seq);
  mqtt.publish(topic_ack, ack);
}

void connect_mqtt() {
  while (!mqtt.connected()) {
    // Client id: the device id; clean session (the server keeps the
    // inbox, not the session).
    if (mqtt.connect(DEVICE, DEVICE, TOKEN)) {
      mqtt.subscribe(topic_errors);
      mqtt.subscribe(topic_inbox);  // every pending row comes now
    } else {
      // 4: wrong id or token; 3: busy or too many failed attempts.
      Serial.print("connect refused: ");
      Serial.println(mqtt.state());
      delay(5000);
    }
  }
}

void setup() {
  Serial.begin(115200);
  pinMode(RELAY_PIN, OUTPUT);
  snprintf(topic_readings, sizeof topic_readings, "overlord/%s/readings", DEVICE);
  snprintf(topic_inbox, sizeof topic_inbox, "overlord/%s/inbox", DEVICE);
  snprintf(topic_ack, sizeof topic_ack, "overlord/%s/inbox/ack", DEVICE);
  snprintf(topic_errors, sizeof topic_errors, "overlord/%s/errors", DEVICE);
  WiFi.begin(WIFI_SSID, WIFI_PASS);
  while (WiFi.status() != WL_CONNECTED) delay(250);
  mqtt.setServer(HOST, MQTT_PORT);
  mqtt.setBufferSize(BUF_SIZE);  // PubSubClient's default is 256 bytes
  mqtt.setKeepAlive(60);         // silent for 90 s: the server hangs up
  mqtt.setCallback(on_message);
}

unsigned long last_sent = 0;

void loop() {
  connect_mqtt();
  mqtt.loop();  // delivers inbox rows to on_message, sends PINGREQs
  if (last_sent == 0 || millis() - last_sent >= 60000) {
    last_sent = millis();
    float celsius = analogRead(A0) * 0.1;  // your sensor here
    char reading[32];
    snprintf(reading, sizeof reading, "N1=%.1f", celsius);
    mqtt.publish(topic_readings, reading);
  }
}
