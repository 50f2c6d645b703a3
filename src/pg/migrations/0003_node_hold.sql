-- The claim of the node serving this database (src/pg/hold.rs): a node
-- that takes the hold bumps the epoch, and each of its write
-- transactions checks, under a share lock on this row, that the epoch is
-- still its own; so a node that lost the hold without noticing yet
-- cannot write beside the one that took it.
CREATE TABLE node_hold (id integer PRIMARY KEY CHECK (id = 1), epoch bigint NOT NULL);
INSERT INTO node_hold VALUES (1, 0);
