// Validate the custom resources among rendered manifests (a JSON array on stdin) against
// their CRDs' OpenAPI schemas: ServiceMonitor and PrometheusRule (Prometheus Operator),
// ScaledObject (KEDA). Prints one line per object; exits 1 when any is invalid.
import { readFileSync } from "node:fs";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";

const MODELS = { PrometheusRule, ServiceMonitor, ScaledObject };
let failed = 0;
for (const doc of JSON.parse(readFileSync(0, "utf8"))) {
  const Model = MODELS[doc.kind];
  if (!Model) continue;
  try {
    new Model(doc).validate();
    console.log(`ok ${doc.kind}/${doc.metadata.name}`);
  } catch (error) {
    failed += 1;
    console.log(`invalid ${doc.kind}/${doc.metadata.name}: ${error.message}`);
  }
}
process.exit(failed ? 1 : 0);
