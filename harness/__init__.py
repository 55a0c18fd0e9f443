"""What the tests and the benchmarks both need: free ports, starting and stopping processes
(the service, redis-server), and the offline reference run. Neither imports the other."""
