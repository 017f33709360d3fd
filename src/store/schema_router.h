#pragma once
// Migration 4: the router's durable state (see src/router/router.h).
// envelopes: every accepted inbound message; UNIQUE(channel, message_id) is the dedupe.
//   state: queued | running | answered | failed | held | dropped.
// outbox: every message to deliver; delivered_at_ms = 0 until the channel took it.
// sender_approvals: senders the owner approved per agent; pairing_codes: codes issued for held senders.
// Indexes are few on purpose: every accepted envelope pays for each one on the hot path (group commit
// at tens of thousands of rows a second), so envelopes carry only the UNIQUE dedupe and (state, id).
// next_attempt_ms keeps an outbox row's delivery backoff; partial indexes stay as small as the work.
#include <string_view>

namespace moat::schema {

constexpr std::string_view kRouter = R"sql(
CREATE TABLE envelopes (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  channel       TEXT    NOT NULL,
  message_id    TEXT    NOT NULL,
  chat          TEXT    NOT NULL,
  sender        TEXT    NOT NULL,
  agent         TEXT    NOT NULL DEFAULT '',
  state         TEXT    NOT NULL,
  attempts      INTEGER NOT NULL DEFAULT 0,
  not_before_ms INTEGER NOT NULL DEFAULT 0,
  error         TEXT    NOT NULL DEFAULT '',
  body_json     TEXT    NOT NULL,
  received_ms   INTEGER NOT NULL,
  UNIQUE (channel, message_id)
);
CREATE INDEX envelopes_by_state ON envelopes (state, id);
CREATE TABLE outbox (
  id              INTEGER PRIMARY KEY AUTOINCREMENT,
  channel         TEXT    NOT NULL,
  chat            TEXT    NOT NULL,
  agent           TEXT    NOT NULL,
  text            TEXT    NOT NULL,
  in_reply_to     INTEGER NOT NULL DEFAULT 0,
  is_error        INTEGER NOT NULL DEFAULT 0,
  reply_to        TEXT    NOT NULL DEFAULT '',
  created_ms      INTEGER NOT NULL,
  delivered_at_ms INTEGER NOT NULL DEFAULT 0,
  attempts        INTEGER NOT NULL DEFAULT 0,
  next_attempt_ms INTEGER NOT NULL DEFAULT 0,
  failed          TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX outbox_undelivered ON outbox (id) WHERE delivered_at_ms = 0 AND failed = '';
CREATE TABLE sender_approvals (
  agent          TEXT    NOT NULL,
  channel        TEXT    NOT NULL,
  sender         TEXT    NOT NULL,
  approved_at_ms INTEGER NOT NULL,
  actor          TEXT    NOT NULL,
  PRIMARY KEY (agent, channel, sender)
);
CREATE TABLE pairing_codes (
  code          TEXT    PRIMARY KEY NOT NULL,
  agent         TEXT    NOT NULL,
  channel       TEXT    NOT NULL,
  sender        TEXT    NOT NULL,
  created_ms    INTEGER NOT NULL,
  used_at_ms    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX pairing_codes_open ON pairing_codes (agent, channel, sender) WHERE used_at_ms = 0;
)sql";

// Migration 8 (issue 15): what a channel that pulls from a platform has taken (Telegram's update offset,
// Discord's session and sequence), written in the same transaction as the envelopes it covers, so a
// crash between fetching and storing fetches again and the dedupe drops what was already accepted;
// and each delivered outbox row's id on the platform (to edit it, or to find it after a crash), and
// how many parts of a reply split for its platform were sent (a crash resumes with the next part).
constexpr std::string_view kChannelState = R"sql(
CREATE TABLE channel_cursors (
  channel       TEXT    PRIMARY KEY NOT NULL,
  cursor_json   TEXT    NOT NULL,
  updated_at_ms INTEGER NOT NULL
);
ALTER TABLE outbox ADD COLUMN platform_id TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN parts_sent INTEGER NOT NULL DEFAULT 0;
)sql";

// Migration 9 (issue 15): replies in progress shown as one platform message that is edited as the
// model streams (router/preview.cpp). The row is written before the message is first sent, and the
// message's platform id as soon as the platform answers, so the turn's final reply can edit that
// message (outbox.edit_platform_id) instead of sending a second one, and a preview left open by a
// crash can be marked "(interrupted)" when moatd starts again. state: open | final | interrupted.
constexpr std::string_view kPreviews = R"sql(
CREATE TABLE previews (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  channel     TEXT    NOT NULL,
  chat        TEXT    NOT NULL,
  agent       TEXT    NOT NULL,
  platform_id TEXT    NOT NULL DEFAULT '',
  text        TEXT    NOT NULL DEFAULT '',
  state       TEXT    NOT NULL,
  updated_ms  INTEGER NOT NULL
);
CREATE INDEX previews_open ON previews (id) WHERE state = 'open';
ALTER TABLE outbox ADD COLUMN edit_platform_id TEXT NOT NULL DEFAULT '';
)sql";

// Migration 10 (issue 15): messaging channels added at run time (`moat channel add`), each kept as the
// text of its [channels.NAME] table, so the one config parser checks it at add and at every start,
// exactly as it checks moat.toml. Channels declared in moat.toml are not here.
constexpr std::string_view kChannelConfigs = R"sql(
CREATE TABLE channel_configs (
  name       TEXT    PRIMARY KEY NOT NULL,
  toml       TEXT    NOT NULL,
  created_ms INTEGER NOT NULL,
  actor      TEXT    NOT NULL
);
)sql";

}  // namespace moat::schema
