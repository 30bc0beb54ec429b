# Gate `training_zone`: the provenance names the zone the training job ran in, that zone is a permitted training
# zone, and it satisfies the model's residency class.
package sovra.gates.training_zone

import rego.v1

deny contains "the provenance does not name the training zone (`training_zone`); push the model with --provenance" if {
	not input.provenance.training_zone
}

deny contains msg if {
	zone := input.provenance.training_zone
	not zone in input.training.permitted_zones
	msg := sprintf("the model was trained in zone %s, which is not a permitted training zone (%s)", [zone, concat(", ", input.training.permitted_zones)])
}

deny contains msg if {
	input.provenance.training_zone
	not input.training.zone_satisfies_residency
	msg := sprintf("the training zone %s fails the model's residency class %s: %s", [input.provenance.training_zone, input.model.residency_class, concat("; ", input.training.residency_violations)])
}
