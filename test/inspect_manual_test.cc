// The manual matches the tool: every example in doc/ckpt-inspect.md (a line
// `$ COMMAND` in a code block, followed by its output) is run, in the order
// of the manual, against the stores the manual describes, made afresh in a
// temporary folder that stands for /tmp. The output must be the manual's up
// to what changes from run to run: times, digests and the per-store secret's
// effects (which tensors share a damaged block), seconds, file offsets.
// Lines are compared as sets (a `...` line in the manual stands for lines it
// left out, a line ending in ` ...` for the rest of that line).

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

#ifndef CKPTDB_SOURCE_DIR
#error "CKPTDB_SOURCE_DIR must name the source tree (set in test/meson.build)"
#endif

namespace ckptdb {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

struct Example {
  std::string command;
  std::vector<std::string> output;
};

// Every `$ ` line of every plain code block, with the lines up to the next
// one or the end of the block.
std::vector<Example> ReadExamples(const std::string& path) {
  std::ifstream in(path);
  std::vector<Example> examples;
  std::string line;
  bool fenced = false;  // inside a code block
  bool plain = false;   // one without a language (```json blocks are schemas)
  while (std::getline(in, line)) {
    if (line.starts_with("```")) {
      plain = !fenced && line == "```";
      fenced = !fenced;
      continue;
    }
    if (!fenced || !plain) continue;
    if (line.starts_with("$ ")) {
      examples.push_back({line.substr(2), {}});
    } else if (!examples.empty()) {
      examples.back().output.push_back(line);
    }
  }
  return examples;
}

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

// What changes from run to run, made the same.
std::string Normalize(std::string line) {
  static const std::vector<std::pair<std::regex, std::string>> kRules = {
      {std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)"), "<time>"},
      {std::regex(R"(repair-\d{8}T\d{6}Z)"), "repair-<time>"},
      {std::regex(R"([0-9a-f]{32})"), "<digest>"},
      {std::regex(R"(in [0-9.e+-]+ s$)"), "in <seconds> s"},
      {std::regex(R"(offset \d+ size \d+)"), "offset <n> size <n>"},
      {std::regex(R"(stored = \d+, computed = \d+)"), "stored = <n>, computed = <n>"},
      {std::regex(R"(tensor '[^']*')"), "tensor '<path>'"},
      {std::regex(R"(\d+ problems$)"), "<n> problems"},
  };
  for (const auto& [pattern, replacement] : kRules) line = std::regex_replace(line, pattern, replacement);
  return line;
}

std::string Joined(const std::vector<std::string>& lines) {
  std::string text;
  for (const std::string& line : lines) text += line + "\n";
  return text;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(InspectManualTest, EveryExampleInTheManualIsWhatTheToolPrints) {
  const fs::path build = fs::path(testing::TestProcessPath()).parent_path().parent_path();
  const std::vector<Example> examples =
      ReadExamples(std::string(CKPTDB_SOURCE_DIR) + "/doc/ckpt-inspect.md");
  ASSERT_GE(examples.size(), 15u);

  // The stores the manual's examples use (its introduction and each
  // example's text say how they were made).
  TempDir root;
  const std::string tmp = root.path();
  const std::string demo = tmp + "/ckpt_doc_demo";
  ASSERT_EQ(testing::RunProcess({(build / "demo" / "train_demo").string(), "--workdir", demo}), 0);
  for (const char* copy : {"ckpt_doc_bad", "ckpt_doc_lost", "ckpt_doc_demo_gc"}) {
    fs::copy(demo, tmp + "/" + copy, fs::copy_options::recursive);
  }
  fs::create_directory(tmp + "/ckx");
  {
    std::fstream chunk_file(tmp + "/ckpt_doc_bad/000028.sst",
                            std::ios::binary | std::ios::in | std::ios::out);
    ASSERT_TRUE(chunk_file.good()) << "the demo no longer writes 000028.sst";
    chunk_file.seekp(5000000);
    chunk_file << "XXXXXXXXXXXXXXXX";
  }

  // One shell runs the examples in order (`echo $?` reads the exit code of
  // the example before it); a marker line separates their outputs.
  std::string script = "PATH=" + (build / "tools").string() + ":$PATH\nstatus=0\n";
  for (size_t i = 0; i < examples.size(); ++i) {
    script += "printf '@@@ %d\\n' " + std::to_string(i) + "\n(exit $status)\n" +
              Replace(examples[i].command, "/tmp/", tmp + "/") + " 2>&1\nstatus=$?\n";
  }
  std::ofstream(tmp + "/script.sh") << script;
  ASSERT_EQ(testing::RunProcess({"/bin/sh", "-c",
                                 "/bin/sh " + tmp + "/script.sh > " + tmp + "/output.txt"}),
            0);
  std::vector<std::vector<std::string>> outputs;
  std::istringstream output(ReadFile(tmp + "/output.txt"));
  for (std::string line; std::getline(output, line);) {
    if (line.starts_with("@@@ ")) {
      outputs.emplace_back();
    } else if (!outputs.empty()) {
      outputs.back().push_back(Normalize(Replace(line, tmp + "/", "/tmp/")));
    }
  }
  ASSERT_EQ(outputs.size(), examples.size());

  for (size_t i = 0; i < examples.size(); ++i) {
    SCOPED_TRACE("$ " + examples[i].command);
    const std::set<std::string> actual(outputs[i].begin(), outputs[i].end());
    bool shortened = false;
    std::set<std::string> expected;
    for (const std::string& line : examples[i].output) {
      if (line == "...") {
        shortened = true;
      } else if (line.ends_with(" ...")) {
        const std::string prefix = Normalize(line.substr(0, line.size() - 4));
        const bool found = std::any_of(actual.begin(), actual.end(), [&](const std::string& got) {
          return got.starts_with(prefix);
        });
        EXPECT_TRUE(found) << "no line starts with: " << prefix;
      } else {
        expected.insert(Normalize(line));
      }
    }
    for (const std::string& line : expected) {
      EXPECT_EQ(actual.count(line), 1u) << "the manual shows a line the tool does not print:\n"
                                        << line << "\nthe tool printed:\n"
                                        << Joined(outputs[i]);
    }
    if (!shortened) {
      for (const std::string& line : actual) {
        const bool documented = expected.count(line) != 0 ||
                                std::any_of(examples[i].output.begin(), examples[i].output.end(),
                                            [&](const std::string& shown) {
                                              return shown.ends_with(" ...") &&
                                                     line.starts_with(Normalize(
                                                         shown.substr(0, shown.size() - 4)));
                                            });
        EXPECT_TRUE(documented) << "the tool prints a line the manual does not show:\n" << line;
      }
    }
  }
}

}  // namespace
}  // namespace ckptdb
