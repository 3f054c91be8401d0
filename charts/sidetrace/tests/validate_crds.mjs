// Validates custom resources against their published CRD schemas, compiled into validators by
// the npm packages @kubernetes-models/prometheus-operator (PodMonitor, ServiceMonitor,
// PrometheusRule) and @kubernetes-models/cert-manager (Certificate, Issuer), generated from the
// projects' CRD openAPIV3Schema. Usage: node validate_crds.mjs NODE_MODULES_DIR OBJECTS.json
// Prints one JSON line per object: {"kind", "name", "ok", "error"}; exits 1 if any is invalid.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [nodeModules, objectsFile] = process.argv.slice(2);
const objects = JSON.parse(readFileSync(objectsFile, "utf8"));
const packages = { "monitoring.coreos.com": "prometheus-operator", "cert-manager.io": "cert-manager" };
let failed = 0;
for (const obj of objects) {
  const [group, version] = obj.apiVersion.split("/");
  const pkg = join(nodeModules, "@kubernetes-models", packages[group] ?? "unknown-group");
  const file = join(pkg, group, version, `${obj.kind}.js`);
  let result = { kind: obj.kind, name: obj.metadata?.name, ok: true, error: null };
  try {
    const mod = await import(pathToFileURL(file).href);
    new mod[obj.kind](obj).validate();
  } catch (e) {
    result = { ...result, ok: false, error: String(e.message || e) };
    failed++;
  }
  console.log(JSON.stringify(result));
}
process.exit(failed ? 1 : 0);
