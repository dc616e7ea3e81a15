#pragma once
// Errors diffctl raises on bad input: a std::invalid_argument whose message names
// the input and what was wrong with it.

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace diffctl {

namespace detail {
template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}
}  // namespace detail

// Throws std::invalid_argument with the parts of the message streamed together
// unless `ok` holds, e.g. require(n > 0, "steps: expected > 0, found ", n).
template <class... Parts>
void require(bool ok, Parts&&... parts) {
  if (!ok) throw std::invalid_argument(detail::concat(std::forward<Parts>(parts)...));
}

}  // namespace diffctl
