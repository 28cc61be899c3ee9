package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/lockstream/lockstream/keyservice"
	keysv1 "github.com/lockstream/lockstream/keyservice/api/keysv1"
	"github.com/lockstream/lockstream/keyservice/api/keysv1/keysv1connect"
)

// adminScope is the derivation scope CreateKeychain uses to create root keys;
// the keys derived for it are discarded.
const adminScope = "lockstream.admin"

type handler struct {
	s *Server
}

var _ keysv1connect.KeyServiceHandler = (*handler)(nil)

// deny audits and returns a PermissionDenied error. The reason names the
// right that is missing (scope, category, mode), never a user.
func (h *handler) deny(ctx context.Context, peer, op string, rec AuditRecord, reason string) error {
	c := callerFrom(ctx)
	rec.Caller, rec.Peer, rec.Op, rec.Outcome, rec.Code, rec.Reason = c.name, peer, op, "denied", connect.CodePermissionDenied.String(), reason
	h.s.audit.write(rec)
	return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("service %q: %s", c.name, reason))
}

// authzKeys checks mode, scope and categories of a key request. Empty
// categories mean every configured category.
func (h *handler) authzKeys(ctx context.Context, peer, op string, needDecrypt bool, scope string, cats []string, n int) error {
	c := callerFrom(ctx)
	rec := AuditRecord{Scope: scope, Categories: cats, Count: n}
	switch {
	case c.mode == ModeNone:
		return h.deny(ctx, peer, op, rec, "may not get keys (mode none)")
	case needDecrypt && c.mode != ModeDecrypt:
		return h.deny(ctx, peer, op, rec, "may not get keys by subject (mode encrypt; decrypt needed)")
	case !allowed(c.scopes, scope):
		return h.deny(ctx, peer, op, rec, fmt.Sprintf("may not use scope %q", printable(scope)))
	}
	check := cats
	if len(check) == 0 {
		check = h.s.cats
	}
	for _, cat := range check {
		if !allowed(c.categories, cat) {
			return h.deny(ctx, peer, op, rec, fmt.Sprintf("may not use category %q", printable(cat)))
		}
	}
	return nil
}

// printable shortens and cleans a caller-supplied name for messages and the
// audit log (scope and category names are not personal, but a caller could
// put anything there).
func printable(s string) string {
	const max = 64
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

func (h *handler) authzAdmin(ctx context.Context, peer, op string, category string) error {
	c := callerFrom(ctx)
	rec := AuditRecord{}
	if category != "" {
		rec.Categories = []string{category}
	}
	if !c.admin {
		return h.deny(ctx, peer, op, rec, "may not use admin operations (admin: false)")
	}
	if category != "" && !allowed(c.categories, category) {
		return h.deny(ctx, peer, op, rec, fmt.Sprintf("may not use category %q", printable(category)))
	}
	return nil
}

// toConnect maps a core error to an RPC error. Core errors carry no PII or
// keys (package keyservice guarantees it), so invalid-argument messages are
// passed on to help the caller.
func toConnect(err error) error {
	var code connect.Code
	switch {
	case errors.Is(err, keyservice.ErrInvalidArgument):
		code = connect.CodeInvalidArgument
	case errors.Is(err, context.DeadlineExceeded):
		code = connect.CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = connect.CodeCanceled
	case errors.Is(err, keyservice.ErrUnavailable):
		code = connect.CodeUnavailable
	case errors.Is(err, keyservice.ErrUnknownUser), errors.Is(err, keyservice.ErrUnknownSubject):
		code = connect.CodeNotFound
	case errors.Is(err, keyservice.ErrUserDeleted), errors.Is(err, keyservice.ErrCategoryRevoked):
		code = connect.CodeFailedPrecondition
	default:
		return connect.NewError(connect.CodeInternal, errors.New("internal error (see the key service log)"))
	}
	return connect.NewError(code, errors.New(strings.TrimPrefix(err.Error(), "keyservice: ")))
}

func (h *handler) keysResponse(ctx context.Context, method string, res []keyservice.UserKeys, bySubject bool, ids []string) ([]*keysv1.UserKeys, error) {
	if len(res) != len(ids) {
		return nil, connect.NewError(connect.CodeInternal, errors.New("internal error: answer count mismatch"))
	}
	// One backing array for the UserKeys and one for every Key of the
	// answer (pre-sized: no per-user or per-key allocation), reused from
	// an earlier request's answer once that was written (see recycle).
	total := 0
	for i := range res {
		total += len(res[i].Keys)
	}
	ab := answerFrom(ctx)
	out, users, keys, ptrs := ab.sized(len(res), total)
	var ok, deleted, unknown int
	for i := range res {
		r := &res[i]
		u := &users[i]
		u.Subject, u.Status = r.Subject, keysv1.Status_STATUS_OK
		if bySubject {
			u.Subject = ids[i]
		}
		switch {
		case r.Err == nil:
			ok++
		case errors.Is(r.Err, keyservice.ErrUserDeleted):
			u.Status, u.Subject = keysv1.Status_STATUS_DELETED, ""
			if bySubject {
				u.Subject = ids[i]
			}
			deleted++
		case errors.Is(r.Err, keyservice.ErrUnknownUser), errors.Is(r.Err, keyservice.ErrUnknownSubject):
			u.Status, u.Subject = keysv1.Status_STATUS_UNKNOWN, ""
			if bySubject {
				u.Subject = ids[i]
			}
			unknown++
		default:
			return nil, toConnect(r.Err)
		}
		if r.Err == nil {
			u.RevokedCategories = r.Revoked
			n := len(r.Keys)
			u.Keys = ptrs[:n:n]
			for j, k := range r.Keys {
				pk := &keys[j]
				pk.Category, pk.Version, pk.Key = k.Category, int32(k.Version), k.Secret.Expose()
				u.Keys[j] = pk
			}
			keys, ptrs = keys[n:], ptrs[n:]
		}
		out[i] = u
	}
	h.s.metrics.keys.WithLabelValues(method).Add(float64(total))
	if ok > 0 {
		h.s.metrics.users.WithLabelValues(method, "ok").Add(float64(ok))
	}
	if deleted > 0 {
		h.s.metrics.users.WithLabelValues(method, "deleted").Add(float64(deleted))
	}
	if unknown > 0 {
		h.s.metrics.users.WithLabelValues(method, "unknown").Add(float64(unknown))
	}
	return out, nil
}

func (h *handler) GetOrCreateKeys(ctx context.Context, req *connect.Request[keysv1.GetOrCreateKeysRequest]) (*connect.Response[keysv1.GetOrCreateKeysResponse], error) {
	m := req.Msg
	if err := h.authzKeys(ctx, req.Peer().Addr, "GetOrCreateKeys", false, m.Scope, m.Categories, len(m.UserIds)); err != nil {
		return nil, err
	}
	ab := answerFrom(ctx)
	start := time.Now()
	if err := h.s.svc.GetOrCreateInto(ctx, m.Scope, m.UserIds, m.Categories, &ab.svc); err != nil {
		return nil, toConnect(err)
	}
	path := "existing"
	if ab.svc.Writes > 0 {
		path = "create"
	}
	h.s.metrics.paths.WithLabelValues(path).Observe(time.Since(start).Seconds())
	out, err := h.keysResponse(ctx, "GetOrCreateKeys", ab.svc.Users, false, m.UserIds)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keysv1.GetOrCreateKeysResponse{Results: out}), nil
}

func (h *handler) GetKeysByUser(ctx context.Context, req *connect.Request[keysv1.GetKeysByUserRequest]) (*connect.Response[keysv1.GetKeysByUserResponse], error) {
	m := req.Msg
	if err := h.authzKeys(ctx, req.Peer().Addr, "GetKeysByUser", false, m.Scope, m.Categories, len(m.UserIds)); err != nil {
		return nil, err
	}
	ab := answerFrom(ctx)
	if err := h.s.svc.GetByUserInto(ctx, m.Scope, m.UserIds, m.Categories, &ab.svc); err != nil {
		return nil, toConnect(err)
	}
	out, err := h.keysResponse(ctx, "GetKeysByUser", ab.svc.Users, false, m.UserIds)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keysv1.GetKeysByUserResponse{Results: out}), nil
}

func (h *handler) GetKeysBySubject(ctx context.Context, req *connect.Request[keysv1.GetKeysBySubjectRequest]) (*connect.Response[keysv1.GetKeysBySubjectResponse], error) {
	m := req.Msg
	if err := h.authzKeys(ctx, req.Peer().Addr, "GetKeysBySubject", true, m.Scope, m.Categories, len(m.Subjects)); err != nil {
		return nil, err
	}
	res, err := h.s.svc.GetBySubject(ctx, m.Scope, m.Subjects, m.Categories)
	if err != nil {
		return nil, toConnect(err)
	}
	out, err := h.keysResponse(ctx, "GetKeysBySubject", res, true, m.Subjects)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keysv1.GetKeysBySubjectResponse{Results: out}), nil
}

// adminAudit writes the audit line of an admin operation.
func (h *handler) adminAudit(ctx context.Context, peer, op string, rec AuditRecord, err error) {
	rec.Caller, rec.Peer, rec.Op, rec.Outcome = callerFrom(ctx).name, peer, op, "ok"
	if err != nil {
		rec.Outcome, rec.Code = "error", connect.CodeOf(err).String()
	}
	h.s.audit.write(rec)
}

// infoToProto converts a keychain description (no key bytes in it).
func infoToProto(k keyservice.KeychainInfo) *keysv1.Keychain {
	out := &keysv1.Keychain{Subject: k.Subject, State: "active"}
	if !k.Created.IsZero() {
		out.CreatedUnixMs = k.Created.UnixMilli()
	}
	if k.Deleted {
		out.State = "deleted"
		if !k.DeletedAt.IsZero() {
			out.DeletedUnixMs = k.DeletedAt.UnixMilli()
		}
	}
	for _, c := range k.Categories {
		ci := &keysv1.CategoryInfo{Category: c.Category, Revoked: c.Revoked}
		for _, v := range c.Versions {
			ci.Versions = append(ci.Versions, int32(v))
		}
		out.Categories = append(out.Categories, ci)
	}
	return out
}

func (h *handler) CreateKeychain(ctx context.Context, req *connect.Request[keysv1.CreateKeychainRequest]) (*connect.Response[keysv1.CreateKeychainResponse], error) {
	peer := req.Peer().Addr
	if err := h.authzAdmin(ctx, peer, "CreateKeychain", ""); err != nil {
		return nil, err
	}
	info, err := h.createKeychain(ctx, req.Msg.UserId)
	h.adminAudit(ctx, peer, "CreateKeychain", AuditRecord{Subject: info.Subject, Count: 1}, err)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keysv1.CreateKeychainResponse{Keychain: infoToProto(info)}), nil
}

func (h *handler) createKeychain(ctx context.Context, userID string) (keyservice.KeychainInfo, error) {
	res, err := h.s.svc.GetOrCreate(ctx, adminScope, []string{userID}, nil)
	if err != nil {
		return keyservice.KeychainInfo{}, toConnect(err)
	}
	if res[0].Err != nil {
		return keyservice.KeychainInfo{}, toConnect(res[0].Err)
	}
	info, err := h.s.svc.ShowSubject(ctx, res[0].Subject)
	if err != nil {
		return keyservice.KeychainInfo{}, toConnect(err)
	}
	return info, nil
}

func (h *handler) DeleteUser(ctx context.Context, req *connect.Request[keysv1.DeleteUserRequest]) (*connect.Response[keysv1.DeleteUserResponse], error) {
	peer := req.Peer().Addr
	if err := h.authzAdmin(ctx, peer, "DeleteUser", ""); err != nil {
		return nil, err
	}
	var rec AuditRecord
	var err error
	switch t := req.Msg.Target.(type) {
	case *keysv1.DeleteUserRequest_UserId:
		// The subject is looked up first so that the audit line can name
		// the keychain without naming the user.
		if info, e := h.s.svc.Show(ctx, t.UserId); e == nil {
			rec.Subject = info.Subject
		}
		err = h.s.svc.DeleteUser(ctx, t.UserId)
	case *keysv1.DeleteUserRequest_Subject:
		rec.Subject = printable(t.Subject)
		err = h.s.svc.DeleteSubject(ctx, t.Subject)
	default:
		err = fmt.Errorf("%w: set user_id or subject", keyservice.ErrInvalidArgument)
	}
	if err != nil {
		err = toConnect(err)
	}
	h.adminAudit(ctx, peer, "DeleteUser", rec, err)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keysv1.DeleteUserResponse{}), nil
}

func (h *handler) RevokeCategory(ctx context.Context, req *connect.Request[keysv1.RevokeCategoryRequest]) (*connect.Response[keysv1.RevokeCategoryResponse], error) {
	peer := req.Peer().Addr
	m := req.Msg
	if err := h.authzAdmin(ctx, peer, "RevokeCategory", m.Category); err != nil {
		return nil, err
	}
	rec := AuditRecord{Categories: []string{printable(m.Category)}}
	if info, e := h.s.svc.Show(ctx, m.UserId); e == nil {
		rec.Subject = info.Subject
	}
	err := h.s.svc.Revoke(ctx, m.UserId, m.Category)
	if err != nil {
		err = toConnect(err)
	}
	h.adminAudit(ctx, peer, "RevokeCategory", rec, err)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keysv1.RevokeCategoryResponse{}), nil
}

func (h *handler) RotateCategory(ctx context.Context, req *connect.Request[keysv1.RotateCategoryRequest]) (*connect.Response[keysv1.RotateCategoryResponse], error) {
	peer := req.Peer().Addr
	m := req.Msg
	if err := h.authzAdmin(ctx, peer, "RotateCategory", m.Category); err != nil {
		return nil, err
	}
	rec := AuditRecord{Categories: []string{printable(m.Category)}}
	v, err := h.s.svc.Rotate(ctx, m.Category)
	if err == nil && m.MinVersion > 0 {
		err = h.s.svc.SetMinVersion(ctx, m.Category, int(m.MinVersion))
	}
	if err != nil {
		err = toConnect(err)
	}
	rec.Version = v
	h.adminAudit(ctx, peer, "RotateCategory", rec, err)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keysv1.RotateCategoryResponse{NewVersion: int32(v)}), nil
}

func (h *handler) ShowKeychain(ctx context.Context, req *connect.Request[keysv1.ShowKeychainRequest]) (*connect.Response[keysv1.ShowKeychainResponse], error) {
	peer := req.Peer().Addr
	if err := h.authzAdmin(ctx, peer, "ShowKeychain", ""); err != nil {
		return nil, err
	}
	var info keyservice.KeychainInfo
	var err error
	switch t := req.Msg.Target.(type) {
	case *keysv1.ShowKeychainRequest_UserId:
		info, err = h.s.svc.Show(ctx, t.UserId)
	case *keysv1.ShowKeychainRequest_Subject:
		info, err = h.s.svc.ShowSubject(ctx, t.Subject)
	default:
		err = fmt.Errorf("%w: set user_id or subject", keyservice.ErrInvalidArgument)
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&keysv1.ShowKeychainResponse{Keychain: infoToProto(info)}), nil
}
