"""Live monitoring: online market state, drift detectors, rolling error metrics, versioned configs."""
