"""BMC: bridged pseudo-winners (``bridging``), token-correlation weights and the weighted DPO loss (``loss``), and the
DPO trainer hook that applies them (``trainer``)."""
