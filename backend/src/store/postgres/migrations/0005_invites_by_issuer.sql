-- One issuer's invites, newest first (a user's ListInvites and their day's count of
-- CreateInvite): read through this index, not by scanning every invite.
CREATE INDEX invites_issuer_id ON invites (issuer, id);
