"""Option surfaces: implied vols, chains and forwards, SVI / SSVI fits and arbitrage checks."""
