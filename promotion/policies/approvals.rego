# Gate `approvals`: N distinct configured approvers signed (model digest, from, to) for this promotion.
# Unknown, duplicate, mismatched or expired approvals were already set aside (input.approvals.rejected).
package sovra.gates.approvals

import rego.v1

deny contains msg if {
	count(input.approvals.valid) < input.approvals.required
	msg := sprintf("%d of %d required approvals from distinct configured approvers (%s) for %s → %s%s", [count(input.approvals.valid), input.approvals.required, concat(", ", input.approvals.approvers), input.from.stage, input.to.stage, rejected_note])
}

rejected_note := "" if {
	count(input.approvals.rejected) == 0
}

rejected_note := sprintf("; not counted: %s", [concat("; ", input.approvals.rejected)]) if {
	count(input.approvals.rejected) > 0
}
