#include "store/sandbox_repo.h"

namespace moat {

namespace {

constexpr std::string_view kColumns =
    "name, id, image, image_digest, runtime, state, uid_base, disk_bytes, memory_bytes, pids_limit, cpus, "
    "options_json, created_at_ms, started_at_ms, last_used_at_ms, io_read_bps, io_write_bps, io_read_iops, "
    "io_write_iops";

SandboxRecord read_row(const Statement& st) {
  SandboxRecord r;
  r.name = st.column_text(0);
  r.id = st.column_text(1);
  r.image = st.column_text(2);
  r.image_digest = st.column_text(3);
  r.runtime = st.column_text(4);
  r.state = st.column_text(5);
  r.uid_base = st.column_int64(6);
  r.disk_bytes = st.column_int64(7);
  r.memory_bytes = st.column_int64(8);
  r.pids_limit = st.column_int64(9);
  r.cpus = st.column_double(10);
  r.options_json = st.column_text(11);
  r.created_at_ms = st.column_int64(12);
  r.started_at_ms = st.column_int64(13);
  r.last_used_at_ms = st.column_int64(14);
  r.io_read_bps = st.column_int64(15);
  r.io_write_bps = st.column_int64(16);
  r.io_read_iops = st.column_int64(17);
  r.io_write_iops = st.column_int64(18);
  return r;
}

std::unexpected<Error> not_found(std::string_view name) {
  return fail(ErrorKind::NotFound, "no sandbox named '{}'; see 'moat sandbox ls'", name);
}

}  // namespace

bool is_valid_sandbox_state(std::string_view state) {
  return state == "created" || state == "running" || state == "stopped" || state == "removing";
}

Result<SandboxRecord> SandboxRepo::insert(SandboxRecord rec) {
  if (!is_valid_sandbox_state(rec.state))
    return fail(ErrorKind::InvalidInput, "sandbox '{}' has unknown state '{}' (expected created, running, stopped or removing)",
                rec.name, rec.state);
  if (rec.uid_base != 0 && !is_valid_uid_base(rec.uid_base))
    return fail(ErrorKind::InvalidInput,
                "sandbox '{}': uid base {} is not an aligned range ({} + k * {}); pass 0 to allocate one", rec.name,
                rec.uid_base, kIdRegionFirst, kUidRangeSize);

  auto tx = Transaction::begin(db_);
  if (!tx) return wrap(tx.error(), fmt::format("creating sandbox '{}'", rec.name));

  auto exists = db_.prepare("SELECT 1 FROM sandboxes WHERE name = ?1");
  if (!exists) return std::unexpected(exists.error());
  exists->bind(1, rec.name);
  auto found = exists->step();
  if (!found) return wrap(found.error(), fmt::format("creating sandbox '{}'", rec.name));
  if (*found)
    return fail(ErrorKind::Conflict, "a sandbox named '{}' already exists; pick another name or remove it first",
                rec.name);

  if (rec.uid_base == 0) {
    auto base = allocate_uid_base();
    if (!base) return std::unexpected(base.error());
    rec.uid_base = *base;
  }

  auto st = db_.prepare(fmt::format("INSERT INTO sandboxes ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
                                    "?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
                                    kColumns));
  if (!st) return std::unexpected(st.error());
  st->bind(1, rec.name)
      .bind(2, rec.id)
      .bind(3, rec.image)
      .bind(4, rec.image_digest)
      .bind(5, rec.runtime)
      .bind(6, rec.state)
      .bind(7, rec.uid_base)
      .bind(8, rec.disk_bytes)
      .bind(9, rec.memory_bytes)
      .bind(10, rec.pids_limit)
      .bind(11, rec.cpus)
      .bind(12, rec.options_json)
      .bind(13, rec.created_at_ms)
      .bind(14, rec.started_at_ms)
      .bind(15, rec.last_used_at_ms)
      .bind(16, rec.io_read_bps)
      .bind(17, rec.io_write_bps)
      .bind(18, rec.io_read_iops)
      .bind(19, rec.io_write_iops);
  if (auto r = st->step(); !r) {
    if (r.error().kind == ErrorKind::Conflict)
      return fail(ErrorKind::Conflict, "cannot create sandbox '{}': {} (id {} or uid base {} is already in use)",
                  rec.name, r.error().message, rec.id, rec.uid_base);
    return wrap(r.error(), fmt::format("creating sandbox '{}'", rec.name));
  }
  if (auto s = tx->commit(); !s) return wrap(s.error(), fmt::format("creating sandbox '{}'", rec.name));
  return rec;
}

Result<SandboxRecord> SandboxRepo::get(std::string_view name) {
  auto l = db_.lock();
  auto st = db_.prepare(fmt::format("SELECT {} FROM sandboxes WHERE name = ?1", kColumns));
  if (!st) return std::unexpected(st.error());
  st->bind(1, name);
  auto row = st->step();
  if (!row) return wrap(row.error(), fmt::format("reading sandbox '{}'", name));
  if (!*row) return not_found(name);
  return read_row(*st);
}

Result<std::vector<SandboxRecord>> SandboxRepo::list() {
  auto l = db_.lock();
  auto st = db_.prepare(fmt::format("SELECT {} FROM sandboxes ORDER BY name", kColumns));
  if (!st) return std::unexpected(st.error());
  std::vector<SandboxRecord> out;
  for (;;) {
    auto row = st->step();
    if (!row) return wrap(row.error(), "listing sandboxes");
    if (!*row) break;
    out.push_back(read_row(*st));
  }
  return out;
}

Status SandboxRepo::update_one(std::string_view name, std::string_view sql, auto&& bind_value) {
  auto l = db_.lock();
  auto st = db_.prepare(sql);
  if (!st) return std::unexpected(st.error());
  st->bind(1, name);
  bind_value(*st);
  if (auto r = st->step(); !r) return wrap(r.error(), fmt::format("updating sandbox '{}'", name));
  if (db_.changes() == 0) return not_found(name);
  return {};
}

Status SandboxRepo::update_state(std::string_view name, std::string_view state) {
  if (!is_valid_sandbox_state(state))
    return fail(ErrorKind::InvalidInput, "unknown sandbox state '{}' (expected created, running, stopped or removing)", state);
  return update_one(name, "UPDATE sandboxes SET state = ?2 WHERE name = ?1", [&](Statement& s) { s.bind(2, state); });
}

Status SandboxRepo::touch(std::string_view name, int64_t now_ms) {
  return update_one(name, "UPDATE sandboxes SET last_used_at_ms = ?2 WHERE name = ?1",
                    [&](Statement& s) { s.bind(2, now_ms); });
}

Status SandboxRepo::mark_started(std::string_view name, int64_t ms) {
  return update_one(name,
                    "UPDATE sandboxes SET state = 'running', started_at_ms = ?2, last_used_at_ms = ?2 WHERE name = ?1",
                    [&](Statement& s) { s.bind(2, ms); });
}

Status SandboxRepo::set_uid_base(std::string_view name, int64_t uid_base, std::string_view options_json) {
  if (!is_valid_uid_base(uid_base))
    return fail(ErrorKind::InvalidInput, "sandbox '{}': uid base {} is not an aligned range", name, uid_base);
  auto st = update_one(name, "UPDATE sandboxes SET uid_base = ?2, options_json = ?3 WHERE name = ?1", [&](Statement& s) {
    s.bind(2, uid_base);
    s.bind(3, options_json);
  });
  if (!st && st.error().kind != ErrorKind::NotFound && st.error().message.find("UNIQUE") != std::string::npos)
    return fail(ErrorKind::Conflict, "sandbox '{}': uid range {} is taken by another sandbox; try again", name, uid_base);
  return st;
}

Status SandboxRepo::remove(std::string_view name) {
  return update_one(name, "DELETE FROM sandboxes WHERE name = ?1", [](Statement&) {});
}

Result<int64_t> SandboxRepo::allocate_uid_base() {
  auto l = db_.lock();
  auto st = db_.prepare("SELECT uid_base FROM sandboxes WHERE uid_base >= ?1 ORDER BY uid_base");
  if (!st) return std::unexpected(st.error());
  st->bind(1, kIdRegionFirst);
  int64_t candidate = kIdRegionFirst;
  for (;;) {
    auto row = st->step();
    if (!row) return wrap(row.error(), "allocating a uid range");
    if (!*row) break;
    int64_t used = st->column_int64(0);
    // A base inside the candidate's range (only possible for rows written by hand) also blocks it.
    if (used >= candidate + kUidRangeSize) break;
    if (used + kUidRangeSize > candidate)
      candidate = kIdRegionFirst + ((used + kUidRangeSize - kIdRegionFirst + kUidRangeSize - 1) / kUidRangeSize) *
                                       kUidRangeSize;
  }
  if (candidate > kUidBaseLast)
    return fail(ErrorKind::ResourceLimit, "no free uid range is left for another sandbox; remove unused sandboxes");
  return candidate;
}

Result<int64_t> SandboxRepo::count_using_image(std::string_view digest) {
  auto l = db_.lock();
  auto st = db_.prepare("SELECT count(*) FROM sandboxes WHERE image_digest = ?1");
  if (!st) return std::unexpected(st.error());
  st->bind(1, digest);
  auto row = st->step();
  if (!row) return wrap(row.error(), "counting sandboxes using an image");
  return st->column_int64(0);
}

}  // namespace moat
