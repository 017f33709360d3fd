#pragma once
// Migration 5: agents and what their turns leave behind (see src/agent/agent_runtime.h).
// agents: one row per agent, spec as JSON. chat_history: the messages of each (agent, channel, chat)
// conversation in provider-neutral form (role + content blocks as JSON), seq ascending;
// chat_summaries: the summary standing in for history up to `through_seq`. agent_usage: totals.
#include <string_view>

namespace moat::schema {

constexpr std::string_view kAgents = R"sql(
CREATE TABLE agents (
  name       TEXT    PRIMARY KEY NOT NULL,
  source     TEXT    NOT NULL,
  spec_json  TEXT    NOT NULL,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL
);
CREATE TABLE chat_history (
  agent        TEXT    NOT NULL,
  channel      TEXT    NOT NULL,
  chat         TEXT    NOT NULL,
  seq          INTEGER NOT NULL,
  role         TEXT    NOT NULL,
  content_json TEXT    NOT NULL,
  tokens       INTEGER NOT NULL DEFAULT 0,
  created_ms   INTEGER NOT NULL,
  PRIMARY KEY (agent, channel, chat, seq)
);
CREATE TABLE chat_summaries (
  agent       TEXT    NOT NULL,
  channel     TEXT    NOT NULL,
  chat        TEXT    NOT NULL,
  through_seq INTEGER NOT NULL,
  summary     TEXT    NOT NULL,
  created_ms  INTEGER NOT NULL,
  PRIMARY KEY (agent, channel, chat)
);
CREATE TABLE agent_usage (
  agent         TEXT    PRIMARY KEY NOT NULL,
  turns         INTEGER NOT NULL DEFAULT 0,
  model_calls   INTEGER NOT NULL DEFAULT 0,
  input_tokens  INTEGER NOT NULL DEFAULT 0,
  output_tokens INTEGER NOT NULL DEFAULT 0,
  tool_calls    INTEGER NOT NULL DEFAULT 0,
  cost_micros   INTEGER NOT NULL DEFAULT 0
);
)sql";

}  // namespace moat::schema
