-- Where the serving node takes the connections other nodes forward to it
-- (src/server/forward.rs): its `[store] node_listen` address as the others
-- reach it, and the key a forwarded connection opens with. Written by the
-- node that holds the claim, for its epoch; read by the nodes that do not.
ALTER TABLE node_hold ADD COLUMN forward_to text NOT NULL DEFAULT '',
    ADD COLUMN forward_key text NOT NULL DEFAULT '';
