#pragma once
#include <nlohmann/json.hpp>

namespace moat {
using Json = nlohmann::json;
}
