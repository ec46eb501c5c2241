-- Memories newest first, in the order the substring search and the listing return them: a
-- search walks this index and stops at its limit instead of sorting every visible memory.
CREATE INDEX agent_memories_created_idx ON agent_memories (created_at DESC, id);
