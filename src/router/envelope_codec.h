#pragma once
// How an envelope is kept in the store: the columns hold what is queried (channel, chat, sender,
// message id, agent); body_json holds the rest, so a row never repeats a column in its body.
#include <string>
#include <string_view>

#include "base/result.h"
#include "router/envelope.h"

namespace moat::router {

std::string envelope_body_json(const Envelope& e);
// Fills the body fields of `e` from body_json; a body that does not parse is an Internal error (the
// store was written by us, so that is corruption, not bad input).
Status envelope_body_from_json(std::string_view body, Envelope& e);

}  // namespace moat::router
