"""ALLO preference neurons: warm-up DPO, neuron scores, global top-r% masks, where they sit by layer."""
