# Gate `residency`: the target zone satisfies the model's residency class (the class of its training data).
package sovra.gates.residency

import rego.v1

deny contains msg if {
	not input.target.satisfies_residency
	msg := sprintf("target zone %s fails residency class %s: %s", [input.target.zone.id, input.model.residency_class, concat("; ", input.target.residency_violations)])
}
