"""Order flow and price formation, per venue and symbol: order-flow imbalance (Cont, Kukanov &
Stoikov 2014; multi-level and integrated), Kyle's lambda and Amihud illiquidity, trade-sign memory
and the propagator (Bouchaud et al. 2004), book resilience after sweeps, and a book-aware cost of a
child-order schedule. Imports only `core`, `data` and itself."""
