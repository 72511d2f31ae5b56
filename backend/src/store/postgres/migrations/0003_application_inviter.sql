-- The member whose GroupInvite filed an application (under the APPROVAL policy); 0: the user
-- asked itself. Approval checks the invitee's blocks and policy against the inviter again.
ALTER TABLE group_applications ADD COLUMN inviter bigint NOT NULL DEFAULT 0;
