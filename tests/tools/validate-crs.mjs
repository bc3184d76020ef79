// Validates custom resources against the validators that
// @kubernetes-models/{cert-manager,prometheus-operator} generate from those
// projects' API types (types, enums, required fields; unknown fields are not
// rejected by them). Reads a JSON array of objects on stdin; prints one line
// per object, `ok <kind>/<name>` or `error <kind>/<name>: <why>`, and exits 1
// on any error or unknown kind. KEYHOOK_CHART_TOOLS is where
// tests/tools/install-chart-tools.sh installed the packages.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { homedir } from "node:os";
import { pathToFileURL } from "node:url";

const root = process.env.KEYHOOK_CHART_TOOLS || join(homedir(), ".cache", "keyhook-chart-tools");
const models = {
  "cert-manager.io/v1/Certificate": ["cert-manager", "cert-manager.io/v1/Certificate.js"],
  "cert-manager.io/v1/Issuer": ["cert-manager", "cert-manager.io/v1/Issuer.js"],
  "monitoring.coreos.com/v1/ServiceMonitor": ["prometheus-operator", "monitoring.coreos.com/v1/ServiceMonitor.js"],
  "monitoring.coreos.com/v1/PrometheusRule": ["prometheus-operator", "monitoring.coreos.com/v1/PrometheusRule.js"],
};

let failed = false;
for (const object of JSON.parse(readFileSync(0, "utf8"))) {
  const key = `${object.apiVersion}/${object.kind}`;
  const name = `${object.kind}/${object.metadata?.name}`;
  const model = models[key];
  if (!model) {
    console.log(`error ${name}: no validator for ${key}`);
    failed = true;
    continue;
  }
  const file = join(root, "node_modules", "@kubernetes-models", model[0], model[1]);
  const Model = (await import(pathToFileURL(file).href))[object.kind];
  try {
    new Model(object).validate();
    console.log(`ok ${name}`);
  } catch (e) {
    console.log(`error ${name}: ${e.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
