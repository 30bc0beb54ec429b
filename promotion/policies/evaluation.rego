# Gate `evaluation`: every configured evaluation threshold is met by the model's metrics.
package sovra.gates.evaluation

import rego.v1

deny contains msg if {
	some name, _ in input.evaluation.thresholds
	not is_number(input.metrics[name])
	msg := sprintf("metric %s is missing; push the model with --metrics holding it", [name])
}

deny contains msg if {
	some name, t in input.evaluation.thresholds
	value := input.metrics[name]
	is_number(t.min)
	value < t.min
	msg := sprintf("metric %s = %v is below the minimum %v", [name, value, t.min])
}

deny contains msg if {
	some name, t in input.evaluation.thresholds
	value := input.metrics[name]
	is_number(t.max)
	value > t.max
	msg := sprintf("metric %s = %v is above the maximum %v", [name, value, t.max])
}
