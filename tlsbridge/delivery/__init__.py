"""Getting published certificates served: containers, Swarm services, verification."""
